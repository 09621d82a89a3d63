// The kiosk page: pick a game, follow the queue, play the stream full-window, send input, show live figures.
//
// The page talks only to the kiosk server on the seat (its JSON API, see docs/kiosk.md), which holds the session
// token and relays to the broker. The browser's own WebRTC stack is the agent's peer. Stamps and input go through
// protocol.js, which is built from the agent's protocol description (GET /api/protocol).
//
// window.cloudseat is the page's state for automation and monitoring (documented in docs/kiosk.md).

import { SeatProtocol } from "./protocol.js";

const params = new URLSearchParams(location.search);
const RECONNECT_DELAYS_MS = [0, 500, 1000, 2000, 4000]; // one try per entry, then the page gives up
const DISCONNECTED_GRACE_MS = 2000; // ICE "disconnected" this long counts as lost
const STALL_MS = 3000; // no new frame this long while playing counts as lost
const GATHER_TIMEOUT_MS = 5000; // non-trickle ICE: the offer goes when gathering completes, or after this
const FIRST_FRAME_TIMEOUT_MS = 15000;
const MAX_RESUMES = 3; // a session lost this many times in a row is not resumed again
const STATS_EVERY_MS = 1000;
// How often the page's stats windows go to the broker (through the kiosk) to count for the SLA; ?report_every_ms=.
const REPORT_EVERY_MS = Number(params.get("report_every_ms")) || 10000;
// The receiver's latency knobs (docs/kiosk.md#latency-knobs): how long Chromium's jitter buffer aims to hold a frame
// (RTCRtpReceiver.jitterBufferTarget, ms) and its older playout delay hint (s), unset: Chromium's own choice; and
// whether the offer carries the playout-delay RTP header extension, with which the agent asks Chromium to render
// each frame as soon as it is decoded (1, the default: offered; 0: withheld).
const JITTER_TARGET_MS = knob("jitter_target_ms", 0, 4000);
const PLAYOUT_DELAY_S = knob("playout_delay_s", 0, 10);
const PLAYOUT_DELAY_EXTENSION = (knob("playout_delay_ext", 0, 1) ?? 1) === 1;
const PLAYOUT_DELAY_URI = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
// This seat's own playout mode over its zone's (?playout=auto|low_latency|smooth; unset: the zone's), told to the
// agent by a session-level attribute of the offer the page sends (gpu_agent/media/offer.py).
const PLAYOUT_MODE = ["auto", "low_latency", "smooth"].includes(params.get("playout"))
  ? params.get("playout").toUpperCase()
  : null;
const RTP_TICKS_PER_US = 0.09; // the video RTP clock, 90 kHz; the agent's RTP timestamps are its capture times
const STAMP_CHECK_EVERY = 30; // frames: a stamp read back this often though nothing waits for one
const STAMP_AGREES_US = 50; // a stamp whose capture time the RTP timestamp predicts within this: same frame

/** A numeric page parameter within [low, high], or null when absent (or not a number there). */
function knob(name, low, high) {
  if (!params.has(name)) return null;
  const value = Number(params.get(name));
  return Number.isFinite(value) && value >= low && value <= high ? value : null;
}
const MAX_REPORT = 60; // samples per report, as the broker takes them
const CLOCK_SYNC_EVERY_MS = 20000;
const DECODED_FLUSH_MS = 100; // decoded.js sends its frames this often
// The worker's queue: frames it has not read yet (the oldest would be dropped past it, untimed); a second's worth.
const DECODED_BUFFER_FRAMES = 60;
const MAX_SAMPLES = 20000; // per series; the oldest go first
const MAX_PENDING_INPUTS = 4096;
const LIVE_WINDOW = 300; // the overlay's percentiles: over this many recent samples
const WARNING_SHOWN_MS = 30000;
const STARTING_POLL_MS = 300; // while a start or resume is in flight: why it waits, if it does (GET /api/starting)

const $ = (id) => document.getElementById(id);

// -- the public object ----------------------------------------------------------------------------------------

const emptyStats = () => ({
  framesDecoded: 0,
  framesDropped: 0,
  fps: 0,
  jitterBufferDelayMs: 0,
  jitterMs: 0,
  decodeMsPerFrame: 0,
  freezes: 0,
  freezesDurationMs: 0,
  packetsLost: 0,
  bitrateKbps: 0,
  rttMs: 0,
  width: 0,
  height: 0,
  codec: "",
  decoder: "",
  stampsRead: 0,
  stampsUnreadable: 0,
  stampsDisagreeing: 0,
  stampsRebased: 0,
  framesPresented: 0,
  framesSuperseded: 0,
  framesMeasured: 0,
  framesProcessed: 0,
  framesProcessedTimed: 0,
  lastFrameNumber: null,
  lastInputApplied: 0,
  captureToReceivedMsP50: null,
  captureToDecodedMsP50: null,
  captureToProcessedMsP50: null,
  captureToDisplayMsP50: null,
  inputsSent: 0,
  inputsShown: 0,
  lastInputId: 0,
  inputToPhotonMsP50: null,
  inputToPhotonMsP99: null,
  sessionReadyMs: null,
  reconnects: 0,
  resumes: 0,
  clockOffsetMs: null,
  clockRttMs: null,
  statsReported: 0,
});

const cloudseat = {
  state: "idle", // idle | starting | waiting | queued | connecting | playing | reconnecting | ended | error
  session: null, // the session as the kiosk reports it (state, text, queue_position, warnings, ...)
  message: "", // the one line the page shows
  seat: null, // venue, seat, zone, games
  stats: emptyStats(),
  // The stream receiver's latency knobs as Chromium holds them: {jitterBufferTarget, playoutDelayHint,
  // playoutDelayExtension (negotiated with the agent: true or false; null until the answer is applied)}.
  receiver: null,
  history: [], // [{at, state, message}], the page's states in order (the last 200)
  start: (gameId) => startSession(gameId),
  end: () => endSession(),
  retry: () => boot(),
  measurements: () => measurements(),
  resetMeasurements: () => resetMeasurements(),
  pollStats: () => pollStats(),
  endMeasurements: () => endMeasurements(),
};
window.cloudseat = cloudseat;

function setState(state, message = cloudseat.message) {
  cloudseat.state = state;
  cloudseat.message = message;
  cloudseat.history.push({ at: performance.now(), state, message });
  if (cloudseat.history.length > 200) cloudseat.history.shift();
  document.body.dataset.state = state;
  $("message").textContent = message;
  $("error-text").textContent = state === "error" ? message : "";
  window.dispatchEvent(new CustomEvent("cloudseat:state", { detail: { state, message } }));
}

// -- the kiosk API --------------------------------------------------------------------------------------------

class KioskError extends Error {
  constructor(message, status = 0, field = "") {
    super(message);
    this.status = status;
    this.field = field;
  }
}

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: method === "POST" ? { "Content-Type": "application/json" } : {},
      body: method === "POST" ? JSON.stringify(body ?? {}) : undefined,
      cache: "no-store",
    });
  } catch {
    throw new KioskError("cannot reach the kiosk server on this seat: check that cloudseat-client kiosk runs");
  }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new KioskError(data.error || `${method} ${path}: HTTP ${response.status}`, response.status, data.field);
  }
  return data;
}

// -- clocks: the agent's capture time is CLOCK_MONOTONIC, the kiosk tells us its reading ----------------------

// offsetMs: kiosk CLOCK_MONOTONIC (ms) - performance.now(), from the round trip with the smallest delay.
const clock = { offsetMs: null, rttMs: null, lastSync: -Infinity };

async function syncClock(rounds = 5) {
  let best = null;
  for (let i = 0; i < rounds; i++) {
    const t0 = performance.now();
    const { monotonic_us: us } = await api("GET", "/api/clock");
    const t1 = performance.now();
    if (best === null || t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: us / 1000 - (t0 + t1) / 2 };
  }
  clock.offsetMs = best.offset;
  clock.rttMs = best.rtt;
  clock.lastSync = performance.now();
  cloudseat.stats.clockOffsetMs = best.offset;
  cloudseat.stats.clockRttMs = best.rtt;
}

// -- measurements ---------------------------------------------------------------------------------------------

const series = {
  captureToReceivedMs: [],
  captureToDecodedMs: [],
  captureToProcessedMs: [],
  captureToDisplayMs: [],
  inputToPhotonMs: [],
  fps: [],
};
// Every frame of the window by its RTP timestamp: {captureMs, presentedMs (rVFC presentationTime, when a callback
// came), processedMs (when the decoded frame reached the worker, decoded.js)}, page time. The current connection's
// in link.frameTimes, earlier connections' here. At most MAX_SAMPLES frames, the oldest go first.
let closedFrameTimes = [];
let windowStart = 0;
const inputs = { nextId: 1, pending: [], sent: 0, shown: 0 }; // pending: [{id, at}] in id order

function push(name, value) {
  const s = series[name];
  s.push(value);
  if (s.length > MAX_SAMPLES) s.splice(0, s.length - MAX_SAMPLES);
}

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * (q / 100);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function measurements(until = Infinity, stats = cloudseat.stats) {
  // Copies of the raw series since the last resetMeasurements(), plus the counters they go with. Every frame, timed
  // by its presentation when a callback came for it, else by its arrival at the worker (decoded.js): capture→frame.
  const all = [...closedFrameTimes, ...(link ? link.frameTimes.values() : [])];
  const frames = all.filter(
    (f) => f.captureMs !== null && Math.min(f.presentedMs ?? Infinity, f.processedMs ?? Infinity) <= until,
  );
  const presented = frames.filter((f) => f.presentedMs !== null);
  const both = presented.filter((f) => f.processedMs !== null);
  return {
    captureToReceivedMs: [...series.captureToReceivedMs],
    captureToDecodedMs: [...series.captureToDecodedMs],
    captureToProcessedMs: [...series.captureToProcessedMs],
    captureToFrameMs: frames.map((f) => (f.presentedMs ?? f.processedMs) - f.captureMs),
    // For the frames timed both ways: presentation - arrival at the worker (how the two clocks of a frame compare).
    presentedMinusProcessedMs: both.map((f) => f.presentedMs - f.processedMs),
    framesTimed: frames.length,
    framesTimedPresented: presented.length,
    framesProcessedInWindow: all.filter((f) => f.processedMs !== null && f.processedMs <= until).length,
    captureToDisplayMs: [...series.captureToDisplayMs],
    inputToPhotonMs: [...series.inputToPhotonMs],
    fps: [...series.fps],
    stats: { ...stats },
  };
}

function resetMeasurements() {
  for (const s of Object.values(series)) s.length = 0;
  closedFrameTimes = [];
  if (link) link.frameTimes.clear();
  windowStart = performance.now();
}

/** The window's measurements up to now, with getStats read now (its frame counters then match the frames timed),
 * once the worker has sent what it timed before now. */
async function endMeasurements() {
  await pollStats().catch(() => {});
  const [until, stats] = [performance.now(), { ...cloudseat.stats }];
  await sleep(3 * DECODED_FLUSH_MS);
  return measurements(until, stats);
}

/** The record of the current connection's frame with RTP timestamp `rtp` (made when new). */
function frameTime(rtp) {
  const times = link.frameTimes;
  let f = times.get(rtp);
  if (f === undefined) {
    f = { captureMs: null, presentedMs: null, processedMs: null };
    times.set(rtp, f);
    if (times.size + closedFrameTimes.length > MAX_SAMPLES) {
      if (closedFrameTimes.length) closedFrameTimes.shift();
      else times.delete(times.keys().next().value);
    }
  }
  return f;
}

/** The worker's batch: [rtp, atMs, ...] (decoded.js). */
function framesDecoded(gen, batch) {
  if (!link || link.generation !== gen) return;
  const s = cloudseat.stats;
  for (let i = 0; i < batch.length; i += 2) {
    const [rtp, at] = [batch[i], batch[i + 1] - performance.timeOrigin];
    if (at < windowStart) continue; // decoded before the window, told after it began
    s.framesProcessed++;
    if (rtp === null) continue;
    const captureUs = captureTime(null, rtp);
    const f = frameTime(rtp);
    f.processedMs = at;
    if (captureUs === null || clock.offsetMs === null) continue;
    f.captureMs = captureUs / 1000 - clock.offsetMs;
    s.framesProcessedTimed++;
    push("captureToProcessedMs", at - f.captureMs);
  }
}

/** Time every decoded frame off the main thread (decoded.js), where this Chromium can. */
function watchDecodedFrames(gen, track) {
  if (typeof MediaStreamTrackProcessor === "undefined") return;
  try {
    const processor = new MediaStreamTrackProcessor({ track, maxBufferSize: DECODED_BUFFER_FRAMES });
    const worker = new Worker("/static/decoded.js");
    worker.onmessage = (e) => framesDecoded(gen, e.data);
    worker.postMessage({ readable: processor.readable }, [processor.readable]);
    link.decodedWorker = worker;
  } catch (err) {
    console.warn("decoded frames are not timed", err);
  }
}

// -- boot: who is this seat, what can it play -----------------------------------------------------------------

let protocol = null;

async function boot() {
  setState("idle", "connecting to the kiosk…");
  try {
    const [description, seat] = await Promise.all([api("GET", "/api/protocol"), api("GET", "/api/seat")]);
    protocol = new SeatProtocol(description);
    cloudseat.seat = seat;
    renderSeat(seat);
    if (seat.session) {
      // A live session (the page was reloaded): pick it up where it is.
      follow(seat.session, performance.now());
    } else {
      setState("idle", "pick a game");
    }
  } catch (err) {
    setState("error", err.message);
  }
}

function renderSeat(seat) {
  $("seat").textContent = `${seat.venue_id} · seat ${seat.seat_id} · zone ${seat.zone_id}`;
  const list = $("games");
  list.replaceChildren();
  for (const game of seat.games) {
    const button = document.createElement("button");
    button.className = "game";
    button.dataset.gameId = game.game_id;
    button.textContent = game.name;
    button.addEventListener("click", () => startSession(game.game_id));
    const item = document.createElement("li");
    item.append(button);
    list.append(item);
  }
  if (!seat.games.length) $("message").textContent = "no games are offered yet";
}

// -- the session: start, follow, resume, end ------------------------------------------------------------------

let events = null; // the EventSource of the session followed
let sessionStartedAt = 0; // performance.now() when the session was asked for (session-ready figure)
let resumesInARow = 0;

async function startSession(gameId) {
  if (!["idle", "ended", "error"].includes(cloudseat.state)) {
    throw new KioskError(`a session is already ${cloudseat.state}`);
  }
  const t0 = performance.now();
  resumesInARow = 0;
  cloudseat.stats = emptyStats();
  resetMeasurements();
  setState("starting", `starting ${gameId}…`);
  try {
    const { session } = await api("POST", "/api/sessions", { game_id: gameId }).finally(watchStart());
    follow(session, t0);
    return session;
  } catch (err) {
    setState("error", err.message);
    throw err;
  }
}

// The kiosk's start (or resume) runs within its POST, and keeps asking a busy broker with the same request for a
// while: meanwhile this shows why it waits ("waiting", in the seat's words). Returns the function that stops it.
function watchStart() {
  let active = true;
  (async () => {
    while (active) {
      await sleep(STARTING_POLL_MS);
      if (!active) return;
      try {
        const { waiting } = await api("GET", "/api/starting");
        if (active && waiting) setState("waiting", waiting.text);
      } catch {
        // the POST's own answer says what went wrong
      }
    }
  })();
  return () => {
    active = false;
  };
}

function follow(session, t0) {
  sessionStartedAt = t0;
  cloudseat.session = session;
  closeEvents();
  events = new EventSource(`/api/sessions/${session.session_id}/events`);
  events.addEventListener("update", (e) => onUpdate(JSON.parse(e.data)));
  events.addEventListener("problem", (e) => {
    closeEvents();
    teardown();
    setState("error", JSON.parse(e.data).error);
  });
  // The browser reconnects an EventSource by itself (the kiosk sends the current state first); a kiosk that
  // is gone for good shows as CLOSED.
  events.onerror = () => {
    if (events && events.readyState === EventSource.CLOSED) {
      setState("error", "lost the kiosk server on this seat: check that cloudseat-client kiosk runs");
    }
  };
  onUpdate(session);
}

function closeEvents() {
  if (events) events.close();
  events = null;
}

function onUpdate(update) {
  if (cloudseat.session && update.session_id !== cloudseat.session.session_id) return; // a stale stream
  cloudseat.session = update;
  renderWarnings(update.warnings || [], update.state);
  renderTimeLeft(update);
  switch (update.state) {
    case "PENDING":
    case "PLACED":
    case "STARTING":
      setState("queued", update.text);
      $("queue").textContent = update.queue_position ? `${update.queue_position} / ${update.queue_length}` : "";
      break;
    case "READY":
    case "STREAMING":
      if (!link && !recovery && cloudseat.state !== "error") connect(false);
      else if (cloudseat.state === "playing") setState("playing", update.text);
      break;
    case "ENDED":
      closeEvents();
      recovery = null; // a reconnect loop for this session stops
      teardown();
      if (update.resumable && resumesInARow < MAX_RESUMES) {
        resume(update);
      } else {
        setState("ended", update.text);
      }
      break;
  }
}

async function resume(lost) {
  resumesInARow++;
  cloudseat.stats.resumes++;
  setState("queued", `${lost.text}: getting you a new session at the front of the queue…`);
  try {
    const { session } = await api("POST", `/api/sessions/${lost.session_id}/resume`).finally(watchStart());
    follow(session, performance.now());
  } catch (err) {
    setState("error", `${lost.text}; resuming failed: ${err.message}`);
  }
}

async function endSession() {
  const session = cloudseat.session;
  if (!session || session.state === "ENDED") return session;
  try {
    const { session: ended } = await api("POST", `/api/sessions/${session.session_id}/end`, {
      detail: "ended at the seat",
    });
    // The event stream brings the same update; take it now so the page does not wait for it.
    onUpdate(ended);
    return ended;
  } catch (err) {
    setState("error", err.message);
    throw err;
  }
}

// A warning (the time left, ...) comes with one update; it stays up a while, or until the session ends.
let warningTimer = null;

function renderWarnings(warnings, state) {
  const box = $("warnings");
  if (warnings.length) {
    box.textContent = warnings.join(" · ");
    box.hidden = false;
    clearTimeout(warningTimer);
    warningTimer = setTimeout(() => (box.hidden = true), WARNING_SHOWN_MS);
  } else if (state === "ENDED") {
    box.hidden = true;
  }
}

// The patron's paid time: the broker sends the seconds left with each change and warning (time_left_s, null when
// unlimited); the page counts down between them on its own clock.
let timeLeftTimer = null;

function renderTimeLeft(update) {
  const box = $("time-left");
  clearInterval(timeLeftTimer);
  if (update.time_left_s === null || update.time_left_s === undefined || update.state !== "STREAMING") {
    box.hidden = true;
    return;
  }
  const until = performance.now() + (update.time_up ? update.grace_left_s : update.time_left_s) * 1000;
  const show = () => {
    const s = Math.max(0, Math.ceil((until - performance.now()) / 1000));
    const clock = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    box.textContent = update.time_up ? `time is up · ending in ${clock}` : `time left ${clock}`;
  };
  show();
  box.hidden = false;
  timeLeftTimer = setInterval(show, 1000);
}

// -- the connection: one RTCPeerConnection, replaced on loss ---------------------------------------------------

let link = null; // {pc, channels, generation, ...} of the current connection
let generation = 0;

// Claims the connection (link) at once, then negotiates; resolves true once the agent's answer is applied.
function connect(isReconnect) {
  const session = cloudseat.session;
  const gen = ++generation;
  const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: [] });
  const channels = {};
  for (const [label, options] of Object.entries(protocol.channels)) {
    const init = { ordered: options.ordered };
    if (options.max_retransmits !== undefined) init.maxRetransmits = options.max_retransmits;
    channels[label] = pc.createDataChannel(label, init);
    channels[label].binaryType = "arraybuffer";
  }
  const transceiver = pc.addTransceiver("video", { direction: "recvonly" });
  if (!PLAYOUT_DELAY_EXTENSION && transceiver.setHeaderExtensionsToNegotiate) {
    // Withheld from the offer: the agent answers only what was offered, so it never sends the extension.
    transceiver.setHeaderExtensionsToNegotiate(
      transceiver
        .getHeaderExtensionsToNegotiate()
        .map((e) => (e.uri === PLAYOUT_DELAY_URI ? { ...e, direction: "stopped" } : e)),
    );
  }
  link = {
    pc,
    channels,
    generation: gen,
    disconnectedSince: null,
    lastFrameAt: performance.now(),
    frames: 0,
    presentedFrames: null, // rVFC presentedFrames at the last callback
    rtpBase: null, // {rtp, captureUs}: a frame whose stamp was read, to time frames by their RTP timestamp
    rtpCandidate: null, // the last stamp that rtpBase did not predict
    frameTimes: new Map(), // the window's frames of this connection by RTP timestamp (frameTime)
    decodedWorker: null, // decoded.js, timing every decoded frame
  };
  inputs.pending.length = 0; // inputs of an earlier connection were shown or are lost
  if (!isReconnect) setState("connecting", session.text);

  pc.ontrack = (e) => {
    if (gen !== generation) return;
    // A knob this Chromium lacks is left alone; one it refuses too (the page plays either way).
    if (JITTER_TARGET_MS !== null && "jitterBufferTarget" in e.receiver) {
      try {
        e.receiver.jitterBufferTarget = JITTER_TARGET_MS;
      } catch (err) {
        console.warn("jitterBufferTarget refused", err);
      }
    }
    if (PLAYOUT_DELAY_S !== null && "playoutDelayHint" in e.receiver) {
      try {
        e.receiver.playoutDelayHint = PLAYOUT_DELAY_S;
      } catch (err) {
        console.warn("playoutDelayHint refused", err);
      }
    }
    cloudseat.receiver = {
      jitterBufferTarget: e.receiver.jitterBufferTarget ?? null,
      playoutDelayHint: e.receiver.playoutDelayHint ?? null,
      playoutDelayExtension: null,
      playoutMode: PLAYOUT_MODE, // this seat's own (?playout=), told to the agent; null: the zone's
    };
    if (e.track.kind === "video") watchDecodedFrames(gen, e.track);
    const video = $("video");
    video.srcObject = e.streams[0] || new MediaStream([e.track]);
    video.play().catch(() => {}); // muted autoplay is allowed (and the flags in docs/kiosk.md make sure)
  };
  pc.onconnectionstatechange = () => watchConnection(gen);
  pc.oniceconnectionstatechange = () => watchConnection(gen);
  return negotiate(gen, pc, session, isReconnect);
}

async function negotiate(gen, pc, session, isReconnect) {
  try {
    if (clock.offsetMs === null) await syncClock().catch(() => {});
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    const { sdp } = await api("POST", `/api/sessions/${session.session_id}/negotiate`, {
      sdp: withPlayoutMode(pc.localDescription.sdp),
    });
    if (gen !== generation) return false;
    await pc.setRemoteDescription({ type: "answer", sdp });
    const receiver = pc.getReceivers().find((r) => r.track.kind === "video");
    if (receiver && cloudseat.receiver) {
      const negotiated = receiver.getParameters().headerExtensions ?? [];
      cloudseat.receiver.playoutDelayExtension = negotiated.some((e) => e.uri === PLAYOUT_DELAY_URI);
    }
  } catch (err) {
    // 404/409: the kiosk no longer has this session, or it was resumed or ended: retrying cannot help.
    const fatal = err.status === 404 || err.status === 409;
    if (gen === generation && !isReconnect) lose(gen, `negotiation failed: ${err.message}`, fatal);
    return false;
  }
  startFrameLoop(gen);
  if (!isReconnect) {
    setTimeout(() => {
      if (gen === generation && link && link.frames === 0) lose(gen, "no picture arrived");
    }, FIRST_FRAME_TIMEOUT_MS);
  }
  return true;
}

/** The offer as sent to the agent: with `a=x-cloudseat-playout:MODE` after its timing line when the URL chose a mode
 * (the page's own peer connection keeps the offer as Chromium made it). */
function withPlayoutMode(sdp) {
  if (PLAYOUT_MODE === null) return sdp;
  return sdp.replace(/^(t=.*\r\n)/m, `$1a=x-cloudseat-playout:${PLAYOUT_MODE}\r\n`);
}

function gathered(pc) {
  // Non-trickle: the kiosk relays one offer with every candidate in it.
  return new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

function watchConnection(gen) {
  if (!link || gen !== link.generation) return;
  const { pc } = link;
  const state = pc.connectionState === "failed" ? "failed" : pc.iceConnectionState;
  if (state === "failed") {
    lose(gen, "the connection failed");
  } else if (state === "disconnected") {
    link.disconnectedSince ??= performance.now();
  } else {
    link.disconnectedSince = null;
  }
}

// A lost connection: a new RTCPeerConnection and a new negotiation for the same session (new ICE credentials: the
// agent builds a fresh peer connection too), with growing pauses, a bounded number of times. `recovery` is the
// loop in progress; the session ending (or another session starting) cancels it.
let recovery = null;

async function lose(gen, why, fatal = false) {
  if (recovery || !link || gen !== link.generation) return;
  const mine = (recovery = { sessionId: cloudseat.session.session_id });
  const cancelled = () =>
    recovery !== mine || cloudseat.session?.session_id !== mine.sessionId || cloudseat.session.state === "ENDED";
  try {
    teardown();
    if (fatal) {
      setState("error", why);
      return;
    }
    for (let attempt = 0; attempt < RECONNECT_DELAYS_MS.length; attempt++) {
      setState("reconnecting", `connection lost (${why}); reconnecting, try ${attempt + 1}…`);
      await sleep(RECONNECT_DELAYS_MS[attempt]);
      if (cancelled()) return;
      if (await tryConnect(cancelled)) {
        cloudseat.stats.reconnects++;
        setState("playing", cloudseat.session.text);
        return;
      }
      if (cancelled()) return;
    }
    setState("error", `lost the connection to the game host (${why}); check the seat's network`);
  } finally {
    if (recovery === mine) recovery = null;
  }
}

async function tryConnect(cancelled) {
  // One attempt: a new connection that must bring a frame in time, or it goes.
  const negotiated = connect(true); // claims `link` before its first await
  const gen = generation;
  const ok = await negotiated;
  const deadline = performance.now() + FIRST_FRAME_TIMEOUT_MS;
  while (ok && performance.now() < deadline && !cancelled()) {
    if (!link || link.generation !== gen) return false;
    if (link.frames > 0) return true;
    await sleep(100);
  }
  teardown(gen);
  return false;
}

/** Close the connection: the current one, or only the one of generation `gen` when given. */
function teardown(gen) {
  if (gen !== undefined && (!link || link.generation !== gen)) return;
  generation++;
  if (link) {
    for (const channel of Object.values(link.channels)) channel.close();
    link.pc.close();
    link.decodedWorker?.terminate();
    closedFrameTimes.push(...link.frameTimes.values());
    rollStats(); // keep this connection's counters in the session's totals
  }
  link = null;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// -- frames: stamps, first frame, stall watchdog --------------------------------------------------------------

let stampCanvas = null;

function startFrameLoop(gen) {
  const video = $("video");
  if (!stampCanvas) {
    stampCanvas = document.createElement("canvas");
    stampCanvas.width = protocol.stampWidth;
    stampCanvas.height = protocol.stampHeight;
  }
  const ctx = stampCanvas.getContext("2d", { willReadFrequently: true });
  const onFrame = (now, meta) => {
    if (!link || link.generation !== gen) return;
    frame(ctx, video, now, meta);
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

function frame(ctx, video, now, meta) {
  link.lastFrameAt = now;
  link.frames++;
  const s = cloudseat.stats;
  if (link.frames === 1) {
    if (s.sessionReadyMs === null) s.sessionReadyMs = meta.presentationTime - sessionStartedAt;
    if (!recovery) setState("playing", cloudseat.session.text); // a reconnect says so when it is done
  }
  // Every frame presented since the last callback (a busy page can miss one: then it counts unmeasured).
  s.framesPresented += link.presentedFrames === null ? 1 : Math.max(1, meta.presentedFrames - link.presentedFrames);
  link.presentedFrames = meta.presentedFrames;
  // The stamp is read back only when it is needed: to pair RTP timestamps with capture times, while an input waits
  // to be shown, and now and then to check the pairing. Every frame is timed by its RTP timestamp; reading each
  // frame's corner would cost the page's main thread a canvas copy per frame, and a late callback is a lost one.
  const wanted = link.rtpBase === null || inputs.pending.length > 0 || link.frames % STAMP_CHECK_EVERY === 0;
  const stamp = wanted ? readStamp(ctx, video) : null;
  if (wanted && stamp === null) s.stampsUnreadable++;
  const captureUs = captureTime(stamp, meta.rtpTimestamp);
  if (captureUs !== null && clock.offsetMs !== null) {
    // Decoded: presentationTime, when the decoded frame (out of the jitter buffer and the decoder) was handed to
    // the compositor. (receiveTime + processingDuration would leave out the time in the jitter buffer.)
    s.framesMeasured++;
    const captureMs = captureUs / 1000 - clock.offsetMs;
    push("captureToDecodedMs", meta.presentationTime - captureMs);
    if (meta.rtpTimestamp !== undefined && meta.presentationTime >= windowStart) {
      const f = frameTime(meta.rtpTimestamp);
      f.captureMs = captureMs;
      f.presentedMs = meta.presentationTime;
    }
    push("captureToDisplayMs", meta.expectedDisplayTime - captureMs);
    if (meta.receiveTime !== undefined) push("captureToReceivedMs", meta.receiveTime - captureMs);
  }
  if (stamp === null) return;
  s.stampsRead++;
  s.lastFrameNumber = stamp.frameNumber;
  s.lastInputApplied = stamp.lastInputId;
  // Input→photon: every input the agent had applied before rendering this frame is now on screen.
  const pending = inputs.pending;
  let shown = 0;
  while (shown < pending.length && pending[shown].id <= stamp.lastInputId) {
    push("inputToPhotonMs", meta.presentationTime - pending[shown].at);
    shown++;
  }
  if (shown) {
    pending.splice(0, shown);
    inputs.shown += shown;
  }
}

/** The stamp in the presented frame's corner, or null (unreadable, or a picture too small for one). Only the
 * corner is read back: a 320x32 copy per frame, not the picture. */
function readStamp(ctx, video) {
  const [w, h] = [protocol.stampWidth, protocol.stampHeight];
  if (video.videoWidth < w || video.videoHeight < h) return null;
  ctx.drawImage(video, 0, 0, w, h, 0, 0, w, h);
  return protocol.readStamp(ctx.getImageData(0, 0, w, h).data);
}

/** The frame's capture time (agent CLOCK_MONOTONIC, µs), or null. The agent's RTP timestamps are its capture times
 * on the 90 kHz clock plus an origin of the connection's own, so once a stamp is read with its RTP timestamp (rVFC
 * metadata.rtpTimestamp), every frame of the connection is timed by its RTP timestamp alone, whether or not its
 * stamp can be read. The stamp is read from the video element after the callback, which may already hold a newer
 * frame than the metadata's: a stamp that the RTP timestamp does not predict is such a one, and changes nothing,
 * unless the next such stamp agrees with it (then the first base was the wrong pairing, or the sender is new). */
function captureTime(stamp, rtp) {
  if (rtp === undefined) return stamp === null ? null : stamp.captureUs;
  const predict = (base) => base.captureUs + ((rtp - base.rtp) | 0) / RTP_TICKS_PER_US;
  const agrees = (base) => Math.abs(predict(base) - stamp.captureUs) <= STAMP_AGREES_US;
  if (stamp !== null) {
    const pairing = { rtp, captureUs: stamp.captureUs };
    if (link.rtpBase === null) {
      link.rtpBase = pairing;
    } else if (!agrees(link.rtpBase)) {
      cloudseat.stats.stampsDisagreeing++;
      if (link.rtpCandidate !== null && agrees(link.rtpCandidate)) {
        link.rtpBase = link.rtpCandidate;
        cloudseat.stats.stampsRebased++;
      }
      link.rtpCandidate = pairing;
    }
  }
  return link.rtpBase === null ? null : predict(link.rtpBase);
}

// Every half second: a connection "disconnected" too long, or no frame for too long, is lost.
setInterval(() => {
  if (!link || recovery) return;
  const now = performance.now();
  if (link.disconnectedSince !== null && now - link.disconnectedSince > DISCONNECTED_GRACE_MS) {
    lose(link.generation, "the network stopped answering");
  } else if (cloudseat.state === "playing" && now - link.lastFrameAt > STALL_MS) {
    lose(link.generation, `no picture for ${Math.round((now - link.lastFrameAt) / 1000)} s`);
  }
}, 500);

// -- getStats ------------------------------------------------------------------------------------------------

let previous = null; // the last inbound-rtp sample of the current connection
const noCounts = () => ({
  framesDecoded: 0,
  framesDropped: 0,
  framesSuperseded: 0,
  freezes: 0,
  freezesDurationMs: 0,
  packetsLost: 0,
});
let totals = noCounts();
let current = noCounts();

function rollStats() {
  for (const k of Object.keys(totals)) totals[k] += current[k];
  current = noCounts();
  previous = null;
}

async function pollStats() {
  if (!link) return;
  const gen = link.generation;
  const report = await link.pc.getStats();
  if (!link || link.generation !== gen) return;
  let inbound = null;
  let pair = null;
  const byId = new Map();
  for (const s of report.values()) {
    byId.set(s.id, s);
    if (s.type === "inbound-rtp" && s.kind === "video") inbound = s;
    if (s.type === "transport" && s.selectedCandidatePairId) pair = s.selectedCandidatePairId;
  }
  const st = cloudseat.stats;
  const rtt = pair ? byId.get(pair)?.currentRoundTripTime : undefined;
  if (rtt !== undefined) st.rttMs = rtt * 1000;
  if (!inbound) return;
  current = {
    framesDecoded: inbound.framesDecoded ?? 0,
    framesDropped: inbound.framesDropped ?? 0,
    // Frames the video element replaced by a newer one before the compositor drew them (two decoded within one
    // display frame): presented for composition, never on screen, so no callback can time them.
    framesSuperseded: $("video").getVideoPlaybackQuality?.().droppedVideoFrames ?? 0,
    freezes: inbound.freezeCount ?? 0,
    freezesDurationMs: (inbound.totalFreezesDuration ?? 0) * 1000,
    packetsLost: inbound.packetsLost ?? 0,
  };
  if (current.framesDecoded > (previous?.framesDecoded ?? 0)) link.lastFrameAt = performance.now();
  if (previous) {
    const dt = (inbound.timestamp - previous.timestamp) / 1000;
    const frames = inbound.framesDecoded - previous.framesDecoded;
    if (dt > 0) {
      st.fps = frames / dt;
      st.bitrateKbps = ((inbound.bytesReceived - previous.bytesReceived) * 8) / dt / 1000;
      if (cloudseat.state === "playing") {
        push("fps", st.fps);
        // The seat's own view for the SLA: its fps, and the network round trip (what the zone's cap promises).
        unreported.push({ at_ms: Date.now(), fps: st.fps, rtt_ms: rtt === undefined ? null : rtt * 1000 });
        if (unreported.length > MAX_REPORT) unreported.shift();
      }
    }
    const emitted = inbound.jitterBufferEmittedCount - previous.jitterBufferEmittedCount;
    if (emitted > 0) {
      st.jitterBufferDelayMs = ((inbound.jitterBufferDelay - previous.jitterBufferDelay) / emitted) * 1000;
    }
    if (frames > 0) st.decodeMsPerFrame = ((inbound.totalDecodeTime - previous.totalDecodeTime) / frames) * 1000;
  }
  previous = inbound;
  for (const k of Object.keys(totals)) st[k] = totals[k] + current[k];
  st.jitterMs = (inbound.jitter ?? 0) * 1000;
  st.width = inbound.frameWidth ?? 0;
  st.height = inbound.frameHeight ?? 0;
  st.decoder = inbound.decoderImplementation ?? "";
  st.codec = byId.get(inbound.codecId)?.mimeType?.replace("video/", "") ?? "";
}

setInterval(async () => {
  try {
    await pollStats();
  } catch {
    // a connection closed under us: the next round reads the new one
  }
  const st = cloudseat.stats;
  st.inputsSent = inputs.sent;
  st.inputsShown = inputs.shown;
  st.lastInputId = inputs.nextId - 1;
  st.captureToReceivedMsP50 = percentile(series.captureToReceivedMs.slice(-LIVE_WINDOW), 50);
  st.captureToDecodedMsP50 = percentile(series.captureToDecodedMs.slice(-LIVE_WINDOW), 50);
  st.captureToProcessedMsP50 = percentile(series.captureToProcessedMs.slice(-LIVE_WINDOW), 50);
  st.captureToDisplayMsP50 = percentile(series.captureToDisplayMs.slice(-LIVE_WINDOW), 50);
  st.inputToPhotonMsP50 = percentile(series.inputToPhotonMs, 50);
  st.inputToPhotonMsP99 = percentile(series.inputToPhotonMs, 99);
  if (link && performance.now() - clock.lastSync > CLOCK_SYNC_EVERY_MS) syncClock().catch(() => {});
  renderOverlay();
}, STATS_EVERY_MS);

// Every REPORT_EVERY_MS: the windows since the last report, to the kiosk (which relays them with the seat's
// credentials). A failure is the kiosk's to log; the play goes on and those windows are dropped.
let unreported = [];

async function reportStats() {
  const session = cloudseat.session;
  const batch = unreported;
  unreported = [];
  if (!batch.length || !session || session.state !== "STREAMING") return;
  try {
    const { accepted } = await api("POST", `/api/sessions/${session.session_id}/stats`, { samples: batch });
    cloudseat.stats.statsReported += accepted;
  } catch {
    // not reported: the kiosk's log says why
  }
}

setInterval(reportStats, REPORT_EVERY_MS);

function renderOverlay() {
  const s = cloudseat.stats;
  const ms = (v) => (v === null || v === undefined ? "–" : `${v.toFixed(1)} ms`);
  const rows = [
    ["fps", s.fps.toFixed(1)],
    ["resolution", s.width ? `${s.width}×${s.height}` : "–"],
    ["codec", s.codec ? `${s.codec}${s.decoder ? ` (${s.decoder})` : ""}` : "–"],
    ["bitrate", `${Math.round(s.bitrateKbps)} kbit/s`],
    ["jitter buffer", ms(s.jitterBufferDelayMs)],
    ["decode", ms(s.decodeMsPerFrame)],
    ["freezes", `${s.freezes} (${Math.round(s.freezesDurationMs)} ms)`],
    ["rtt", ms(s.rttMs)],
    ["capture→received p50", ms(s.captureToReceivedMsP50)],
    ["capture→decoded p50", ms(s.captureToDecodedMsP50)],
    ["input→photon p50 / p99", `${ms(s.inputToPhotonMsP50)} / ${ms(s.inputToPhotonMsP99)}`],
    ["session ready", ms(s.sessionReadyMs)],
    ["reconnects / resumes", `${s.reconnects} / ${s.resumes}`],
  ];
  const table = $("overlay");
  table.replaceChildren(
    ...rows.map(([k, v]) => {
      const tr = document.createElement("tr");
      const th = document.createElement("th");
      const td = document.createElement("td");
      th.textContent = k;
      td.textContent = v;
      tr.append(th, td);
      return tr;
    }),
  );
}

// -- input ----------------------------------------------------------------------------------------------------

function send(kind, fields) {
  if (cloudseat.state !== "playing" || !link || !protocol) return null;
  const id = inputs.nextId;
  const at = performance.now();
  const { channel, data } = protocol.encode(kind, id, BigInt(Math.round(at * 1000)), fields);
  const dc = link.channels[channel];
  if (!dc || dc.readyState !== "open") return null;
  dc.send(data);
  inputs.nextId++;
  inputs.sent++;
  inputs.pending.push({ id, at });
  if (inputs.pending.length > MAX_PENDING_INPUTS) inputs.pending.shift(); // never shown: no figure for it
  return id;
}

const held = new Set(); // key codes down, released when the page loses focus

function onKey(e, down) {
  if (cloudseat.state !== "playing" || !protocol) return;
  const usage = protocol.keyUsage(e.code);
  if (usage === undefined) return;
  e.preventDefault(); // the game has the keyboard: no scrolling, no tabbing out
  if (down) held.add(e.code);
  else held.delete(e.code);
  send("KEY", { key: usage, flags: protocol.keyFlags(down, e.repeat) });
}

window.addEventListener("keydown", (e) => onKey(e, true), { capture: true });
window.addEventListener("keyup", (e) => onKey(e, false), { capture: true });
window.addEventListener("blur", () => {
  for (const code of held) send("KEY", { key: protocol.keyUsage(code), flags: protocol.keyFlags(false) });
  held.clear();
});

const clamp = (v, lo, hi) => Math.max(lo, Math.min(hi, Math.round(v)));
// A DOM value rounded into what a field of an input kind may carry (the protocol's ranges).
const fit = (kind, field, v) => clamp(v, ...protocol.range(kind, field));
const video = $("video");

video.addEventListener("click", () => {
  if (cloudseat.state === "playing" && document.pointerLockElement !== video) {
    // Unadjusted movement (raw, no OS acceleration) where the platform has it.
    video.requestPointerLock?.({ unadjustedMovement: true })?.catch?.(() => video.requestPointerLock());
  }
});

video.addEventListener("mousemove", (e) => {
  if (document.pointerLockElement === video) {
    if (e.movementX || e.movementY) {
      send("MOUSE_MOVE", { dx: fit("MOUSE_MOVE", "dx", e.movementX), dy: fit("MOUSE_MOVE", "dy", e.movementY) });
    }
    return;
  }
  // Not locked: absolute position over the picture (object-fit: contain leaves bars around it).
  const p = pictureRect();
  if (!p) return;
  const x = (e.clientX - p.left) / p.width;
  const y = (e.clientY - p.top) / p.height;
  if (x < 0 || x > 1 || y < 0 || y > 1) return;
  // 0..max spans the picture's width and height.
  const [, maxX] = protocol.range("MOUSE_ABS", "x");
  const [, maxY] = protocol.range("MOUSE_ABS", "y");
  send("MOUSE_ABS", { x: fit("MOUSE_ABS", "x", x * maxX), y: fit("MOUSE_ABS", "y", y * maxY) });
});

function pictureRect() {
  const r = video.getBoundingClientRect();
  if (!video.videoWidth || !r.width) return null;
  const scale = Math.min(r.width / video.videoWidth, r.height / video.videoHeight);
  const width = video.videoWidth * scale;
  const height = video.videoHeight * scale;
  return { left: r.left + (r.width - width) / 2, top: r.top + (r.height - height) / 2, width, height };
}

// DOM button numbers -> the protocol's button names (whose index is the wire number).
const DOM_BUTTONS = ["left", "middle", "right", "back", "forward"];

function onButton(e, down) {
  if (cloudseat.state !== "playing") return;
  const index = protocol.input.mouse_buttons.indexOf(DOM_BUTTONS[e.button]);
  if (index < 0 || index > protocol.range("MOUSE_BUTTON", "button")[1]) return;
  e.preventDefault();
  send("MOUSE_BUTTON", { button: index, down: down ? 1 : 0 });
}

video.addEventListener("mousedown", (e) => onButton(e, true));
video.addEventListener("mouseup", (e) => onButton(e, false));
video.addEventListener("contextmenu", (e) => cloudseat.state === "playing" && e.preventDefault());
video.addEventListener(
  "wheel",
  (e) => {
    if (cloudseat.state !== "playing") return;
    e.preventDefault();
    // To notches: pixels (about 100 a notch in Chromium), lines (3 a notch) or pages; positive dy scrolls up.
    const per = { 0: 100, 1: 3, 2: 1 }[e.deltaMode] ?? 100;
    const notch = protocol.input.wheel_notch;
    const dx = fit("WHEEL", "dx", (-e.deltaX / per) * notch);
    const dy = fit("WHEEL", "dy", (-e.deltaY / per) * notch);
    if (dx || dy) send("WHEEL", { dx, dy });
  },
  { passive: false },
);

// Gamepads: polled once per animation frame; a pad's state goes out when it changes.
const padsSent = new Map(); // index -> the last state sent, as a string

function pollGamepads() {
  requestAnimationFrame(pollGamepads);
  if (cloudseat.state !== "playing" || !navigator.getGamepads) return;
  for (const pad of navigator.getGamepads()) {
    if (!pad || !pad.connected || pad.index > protocol.range("GAMEPAD", "pad")[1]) continue;
    // The buttons' bitmask: as many buttons as its field has bits, in the W3C standard order.
    const bits = Math.round(Math.log2(protocol.range("GAMEPAD", "buttons")[1] + 1));
    let buttons = 0;
    pad.buttons.slice(0, bits).forEach((b, i) => {
      if (b.pressed) buttons |= 1 << i;
    });
    // Axes and triggers (-1..1 and 0..1 in the Gamepad API) scaled to their fields' full ranges.
    const scaled = (field, v) => fit("GAMEPAD", field, v * protocol.range("GAMEPAD", field)[1]);
    const state = {
      pad: pad.index,
      buttons: buttons >>> 0,
      left_x: scaled("left_x", pad.axes[0] ?? 0),
      left_y: scaled("left_y", pad.axes[1] ?? 0),
      right_x: scaled("right_x", pad.axes[2] ?? 0),
      right_y: scaled("right_y", pad.axes[3] ?? 0),
      // Standard mapping: buttons 6 and 7 are the analogue triggers.
      left_trigger: scaled("left_trigger", pad.buttons[6]?.value ?? 0),
      right_trigger: scaled("right_trigger", pad.buttons[7]?.value ?? 0),
    };
    const key = JSON.stringify(state);
    if (padsSent.get(pad.index) !== key && send("GAMEPAD", state) !== null) padsSent.set(pad.index, key);
  }
}

window.addEventListener("gamepaddisconnected", (e) => {
  // A pad unplugged mid-game lets go of everything.
  if (!protocol || e.gamepad.index > protocol.range("GAMEPAD", "pad")[1]) return;
  const neutral = Object.fromEntries(protocol.kinds.GAMEPAD.fields.map((field) => [field, 0]));
  send("GAMEPAD", { ...neutral, pad: e.gamepad.index });
  padsSent.delete(e.gamepad.index);
});

// -- wiring ---------------------------------------------------------------------------------------------------

$("end").addEventListener("click", () => endSession().catch(() => {}));
$("cancel").addEventListener("click", () => endSession().catch(() => {}));
$("retry").addEventListener("click", () => boot());
if (params.get("overlay") === "0") document.body.classList.add("no-overlay");
requestAnimationFrame(pollGamepads);
boot();
