// Every frame Chromium decodes for the stream, timed as it leaves the decoder: a dedicated worker reading a
// MediaStreamTrackProcessor's frames (the page transfers the processor's readable here, so the page's main thread
// is not on the path; Chromium hands the frames to the worker directly).
//
// Why: requestVideoFrameCallback runs in the page's rendering steps, and Chromium skips rendering steps while its
// main thread is late: a frame presented in such a display frame gets no callback, and a frame replaced before the
// compositor drew it never will. Those frames are decoded all the same; here each one is timed when it reaches
// this worker, by its RTP timestamp (VideoFrame.metadata().rtpTimestamp), which the page maps to its capture time.
//
// Messages out, every FLUSH_MS while frames come: a flat array [rtpTimestamp, atMs, rtpTimestamp, atMs, ...], atMs
// being performance.timeOrigin + performance.now() here (the page subtracts its own timeOrigin); rtpTimestamp null
// when this Chromium gives no metadata.

const FLUSH_MS = 100;

onmessage = async (event) => {
  const reader = event.data.readable.getReader();
  let pending = [];
  const flush = () => {
    if (pending.length) postMessage(pending);
    pending = [];
  };
  const timer = setInterval(flush, FLUSH_MS);
  try {
    for (;;) {
      const { value: frame, done } = await reader.read();
      if (done) break;
      const at = performance.timeOrigin + performance.now();
      const rtp = frame.metadata?.().rtpTimestamp ?? null;
      frame.close(); // at once: the decoder's frame pool is small
      pending.push(rtp, at);
    }
  } catch {
    // the track ended or the page closed the connection
  } finally {
    clearInterval(timer);
    flush();
  }
};
