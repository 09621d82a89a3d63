from __future__ import annotations

from pathlib import Path

import pytest

from gpu_agent import config
from gpu_agent.errors import ConfigError

GOOD = """
host_id = "host-a1"
provider_id = "prov"
site_id = "site-a"
broker = "127.0.0.1:50051"
slots = 2
gpu_class = "rtx4080"
price_micros_per_slot_hour = 1500000
games_cached = ["demo", "trailer"]
media_addresses = ["127.0.0.1"]
drain_grace_s = 5
insecure = true

[[ice_servers]]
urls = ["stun:127.0.0.1:3478"]

[sources.trailer]
url = "/srv/trailer.mp4"
options = { stream_loop = "-1" }
"""


def test_a_full_config_parses() -> None:
    c = config.parse(GOOD)
    assert (c.host_id, c.slots, c.gpu_class, c.drain_grace_s) == ("host-a1", 2, "rtx4080", 5.0)
    assert c.playout_clean_s == 30.0
    assert config.parse(GOOD.replace("drain_grace_s = 5", "playout_clean_s = 2")).playout_clean_s == 2.0
    assert c.games_cached == ("demo", "trailer")
    assert c.ice_servers[0].urls == ("stun:127.0.0.1:3478",)
    assert dict(c.sources)["trailer"].options == (("stream_loop", "-1"),)


def _without(key: str) -> str:
    return "\n".join(line for line in GOOD.splitlines() if not line.startswith(f"{key} ="))


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (_without("host_id"), "host_id: is required"),
        (GOOD.replace("slots = 2", "slots = 0"), "slots: must be between 1 and 256"),
        (GOOD.replace("slots = 2", "slots = true"), "slots: must be an integer"),
        (GOOD.replace("slots = 2", 'slots = "2"'), "slots: must be an integer"),
        (GOOD.replace('broker = "127.0.0.1:50051"', 'broker = "localhost"'), "broker: must be HOST:PORT"),
        (GOOD.replace('"127.0.0.1"]', '"not-an-ip"]'), "media_addresses[0]: must be an IP address"),
        (GOOD.replace('"demo", "trailer"', '"demo", "bad game"'), "games_cached[1]: must be a game id"),
        (GOOD.replace("stun:127", "http://127"), "ice_servers[0].urls[0]"),
        (GOOD.replace('url = "/srv/trailer.mp4"', ""), "sources.trailer.url: is required"),
        ("slotz = 3\n" + GOOD, "slotz: is not a known setting"),
        (
            GOOD.replace("price_micros_per_slot_hour = 1500000", "price_micros_per_slot_hour = -1"),
            "price_micros_per_slot_hour: must be between",
        ),
        ("host_id = ", "(file): is not valid TOML"),
        (GOOD.replace("drain_grace_s = 5", "drain_grace_s = 5\nplayout_clean_s = 0"), "playout_clean_s: must be"),
    ],
)
def test_each_bad_field_is_named(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(text, "host.toml")
    assert str(e.value).startswith("host.toml: ")
    assert field in str(e.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        config.load(tmp_path / "nope.toml")


def test_tls_is_required_unless_insecure(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls: is required"):
        config.parse(_without("insecure"), "host.toml")
    for name in ("h.pem", "h.key", "ca.pem"):
        (tmp_path / name).write_text("-")
    with_tls = _without("insecure").replace(
        "drain_grace_s = 5", 'drain_grace_s = 5\n[tls]\ncert = "h.pem"\nkey = "h.key"\nca = "ca.pem"'
    )
    assert "[tls]" in with_tls
    path = tmp_path / "host.toml"
    path.write_text(with_tls)
    loaded = config.load(path)  # paths are relative to the config file
    assert loaded.tls is not None and loaded.tls.cert == tmp_path / "h.pem" and not loaded.insecure
    (tmp_path / "ca.pem").unlink()
    with pytest.raises(ConfigError, match=r"tls\.ca: .* does not exist"):
        config.load(path)
    (tmp_path / "ca.pem").write_text("-")
    path.write_text(with_tls.replace("drain_grace_s = 5", "drain_grace_s = 5\ninsecure = true"))
    with pytest.raises(ConfigError, match="insecure: cannot be true with"):
        config.load(path)
