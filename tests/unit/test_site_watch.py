"""broker.site_watch: when a site counts as failing whole, on a fake clock."""

from __future__ import annotations

import pytest

from broker.site_watch import SiteWatch


def test_a_site_fails_once_enough_of_its_hosts_links_died_within_the_window() -> None:
    watch = SiteWatch(10.0, min_hosts=3, share=0.25)
    sizes = {"big": 100, "small": 4}
    for i in range(24):
        watch.link_lost("big", f"b{i}", now=float(i) / 10)
    watch.link_lost("small", "s1", now=0.0)
    watch.link_lost("small", "s2", now=0.0)
    # 24 of 100 and 2 of 4: a quarter of the big one is 25; the small one needs at least 3.
    assert watch.failing(3.0, sizes) == frozenset()
    watch.link_lost("big", "b24", now=3.0)
    watch.link_lost("small", "s3", now=3.0)
    assert watch.failing(3.0, sizes) == {"big", "small"}


def test_a_failing_site_stays_so_until_the_window_after_its_last_link_seen_dead() -> None:
    watch = SiteWatch(10.0, min_hosts=2, share=0.5)
    watch.link_lost("a", "h1", now=0.0)
    watch.link_lost("a", "h2", now=1.0)
    assert watch.failing(1.0, {"a": 4}) == {"a"}
    watch.link_lost("a", "h3", now=9.0)
    # h1 and h2 are older than the window now (declared lost, gone from the site's count): h3 keeps it failing.
    assert watch.failing(10.5, {"a": 1}) == {"a"}
    assert watch.failing(19.0, {"a": 1}) == frozenset()
    assert not watch.watching


def test_the_first_sighting_counts_and_a_link_back_no_longer_does() -> None:
    watch = SiteWatch(10.0, min_hosts=2, share=0.1)
    watch.link_lost("a", "h1", now=0.0)
    watch.link_lost("a", "h1", now=8.0)  # seen again on the next read: still the sighting at 0
    watch.link_lost("a", "h2", now=8.0)
    assert watch.failing(8.0, {"a": 10}) == {"a"}
    watch.link_back("a", "h2")
    watch.link_back("a", "h1")
    assert watch.failing(8.5, {"a": 10}) == frozenset()
    assert not watch.watching
    watch.link_back("never-seen", "x")  # nothing to forget: no error


def test_a_lone_host_never_fails_its_site() -> None:
    watch = SiteWatch(10.0)
    watch.link_lost("a", "h1", now=0.0)
    assert watch.failing(0.0, {"a": 1}) == frozenset()


@pytest.mark.parametrize(
    ("window_s", "min_hosts", "share"), [(0.0, 3, 0.25), (10.0, 0, 0.25), (10.0, 3, 0.0), (10.0, 3, 1.5)]
)
def test_bad_settings_are_refused(window_s: float, min_hosts: int, share: float) -> None:
    with pytest.raises(ValueError):
        SiteWatch(window_s, min_hosts=min_hosts, share=share)
