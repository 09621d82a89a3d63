// The seat protocol in the browser: read the agent's frame stamps, write input messages.
//
// Nothing here is a copy of gpu_agent/seat_protocol.py: every size, offset, format, range, label and key code
// comes from the description that module builds (protocol_description(), served by the kiosk at /api/protocol).
// A change there reaches the page without touching this file; tests run this codec against the Python one in both
// directions.
//
// Pure: no DOM, no network. The kiosk page draws each video frame's stamp region into a canvas and hands the
// pixels to readStamp(); it calls encode() for each input and sends the bytes on the channel encode() names.

/** A stamp as the agent wrote it: {frameNumber, captureUs, lastInputId}. */

const INT_CODES = {
  // Python struct codes -> [bytes, signed]
  b: [1, true],
  B: [1, false],
  h: [2, true],
  H: [2, false],
  i: [4, true],
  I: [4, false],
  l: [4, true],
  L: [4, false],
  q: [8, true],
  Q: [8, false],
};

/** "!BI6h" -> {littleEndian: false, codes: ["B", "I", "h", "h", ...]}; integer codes only (all it uses). */
export function parseStructFormat(format) {
  let rest = format;
  let littleEndian = false;
  if ("@=<>!".includes(rest[0])) {
    littleEndian = rest[0] === "<";
    rest = rest.slice(1);
  }
  const codes = [];
  for (const [, count, code] of rest.matchAll(/(\d*)(.)/g)) {
    if (!(code in INT_CODES)) throw new Error(`struct code ${code} in ${format} is not an integer code`);
    for (let n = count === "" ? 1 : Number(count); n > 0; n--) codes.push(code);
  }
  return { littleEndian, codes, bytes: codes.reduce((sum, c) => sum + INT_CODES[c][0], 0) };
}

/** [low, high] of a struct integer code, as BigInts. */
function codeRange(code) {
  const [bytes, signed] = INT_CODES[code];
  const bits = BigInt(bytes * 8);
  return signed ? [-(1n << (bits - 1n)), (1n << (bits - 1n)) - 1n] : [0n, (1n << bits) - 1n];
}

function writeInt(view, offset, code, value, littleEndian, name, range = codeRange(code)) {
  const [bytes, signed] = INT_CODES[code];
  const wide = bytes === 8;
  const v = wide ? BigInt(value) : Number(value);
  const [lo, hi] = range.map(BigInt);
  if ((!wide && !Number.isInteger(v)) || BigInt(v) < lo || BigInt(v) > hi) {
    throw new RangeError(`${name} ${value} is outside ${lo}..${hi}`);
  }
  switch (code.toLowerCase()) {
    case "b":
      signed ? view.setInt8(offset, v) : view.setUint8(offset, v);
      break;
    case "h":
      signed ? view.setInt16(offset, v, littleEndian) : view.setUint16(offset, v, littleEndian);
      break;
    case "i":
    case "l":
      signed ? view.setInt32(offset, v, littleEndian) : view.setUint32(offset, v, littleEndian);
      break;
    default:
      signed ? view.setBigInt64(offset, v, littleEndian) : view.setBigUint64(offset, v, littleEndian);
  }
  return offset + bytes;
}

function readUint(view, offset, bytes) {
  // Big-endian, as the stamp's byte_order says. 64-bit values become Numbers: µs since boot stay exact (< 2**53).
  switch (bytes) {
    case 1:
      return view.getUint8(offset);
    case 2:
      return view.getUint16(offset);
    case 4:
      return view.getUint32(offset);
    case 8:
      return Number(view.getBigUint64(offset));
    default:
      throw new Error(`no ${bytes}-byte field type`);
  }
}

/** CRC-32 (zlib's): table-driven over the reflected polynomial the description gives. */
export function makeCrc32(polynomial) {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (polynomial ^ (c >>> 1)) >>> 0 : c >>> 1;
    table[n] = c >>> 0;
  }
  // Like zlib.crc32(data, seed): continuing from `seed`.
  return (bytes, seed = 0) => {
    let c = (seed ^ 0xffffffff) >>> 0;
    for (const b of bytes) c = (table[(c ^ b) & 0xff] ^ (c >>> 8)) >>> 0;
    return (c ^ 0xffffffff) >>> 0;
  };
}

export class SeatProtocol {
  /** @param {object} description  the JSON of GET /api/protocol */
  constructor(description) {
    this.description = description;
    const stamp = description.stamp;
    this.stamp = stamp;
    this.stampWidth = stamp.width;
    this.stampHeight = stamp.height;
    if (stamp.byte_order !== "big") throw new Error(`stamp byte order ${stamp.byte_order} is not supported`);
    if (stamp.columns * stamp.rows !== stamp.bytes * 8) throw new Error("the stamp grid does not hold its bytes");
    this._crc32 = makeCrc32(stamp.crc.polynomial);
    this._channelOffset = { red: 0, green: 1, blue: 2 }[stamp.channel];
    if (this._channelOffset === undefined) throw new Error(`stamp channel ${stamp.channel} is not an RGB channel`);

    const input = description.input;
    this.input = input;
    this.version = input.version;
    this.maxBytes = input.max_bytes;
    this.header = { ...parseStructFormat(input.header.format), fields: input.header.fields };
    if (this.header.bytes !== input.header.bytes) throw new Error("the input header's size does not match");
    this.kinds = {};
    for (const [name, kind] of Object.entries(input.kinds)) {
      const body = parseStructFormat(kind.format);
      if (body.bytes !== kind.bytes || body.codes.length !== kind.fields.length) {
        throw new Error(`input kind ${name}: its format does not match its size or fields`);
      }
      this.kinds[name] = { ...kind, ...body, name };
    }
    this.channels = input.channels; // label -> {ordered, max_retransmits?}
    this.keyCodes = description.key_codes;
  }

  // -- stamps ---------------------------------------------------------------------------------------------------

  /**
   * The stamp in RGBA pixels of the stamp region (getImageData of stamp.width x stamp.height at the frame's
   * top-left), or null when it does not read (no stamp, a misread: the CRC decides).
   * @param {Uint8ClampedArray|Uint8Array} rgba
   * @param {number} stride  bytes per row (default: stamp width * 4)
   */
  readStamp(rgba, stride = this.stampWidth * 4) {
    const { cell, columns, rows, sample_inset: inset, threshold } = this.stamp;
    const bytes = new Uint8Array(this.stamp.bytes);
    const samples = (cell - 2 * inset) * (cell - 2 * inset);
    let bit = 0;
    for (let row = 0; row < rows; row++) {
      for (let col = 0; col < columns; col++, bit++) {
        let sum = 0;
        for (let y = row * cell + inset; y < (row + 1) * cell - inset; y++) {
          let p = y * stride + (col * cell + inset) * 4 + this._channelOffset;
          for (let x = inset; x < cell - inset; x++, p += 4) sum += rgba[p];
        }
        if (sum >= threshold * samples) bytes[bit >> 3] |= 0x80 >> (bit & 7);
      }
    }
    return this.parseStampBytes(bytes);
  }

  /** The stamp in its bytes, or null when the CRC does not match. */
  parseStampBytes(bytes) {
    const { crc, fields } = this.stamp;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const covered = bytes.subarray(crc.covers[0], crc.covers[1]);
    if (this._crc32(covered, crc.seed) !== readUint(view, crc.offset, crc.bytes)) return null;
    const out = {};
    for (const f of fields) out[camel(f.name)] = readUint(view, f.offset, f.bytes);
    return out; // {frameNumber, captureUs, lastInputId}
  }

  // -- input ----------------------------------------------------------------------------------------------------

  /** The HID usage for a KeyboardEvent.code, or undefined for a key the protocol does not name. */
  keyUsage(code) {
    return Object.hasOwn(this.keyCodes, code) ? this.keyCodes[code] : undefined;
  }

  /**
   * One input message: {channel, data (ArrayBuffer)}.
   * @param {string} kindName  "KEY", "MOUSE_MOVE", ... (the description's kinds)
   * @param {number} inputId   increasing, uint32
   * @param {number|bigint} sentUs  the seat's clock in µs
   * @param {object} fields    the kind's fields by name, e.g. {key: 0x04, flags: 1}
   */
  encode(kindName, inputId, sentUs, fields) {
    const kind = this.kinds[kindName];
    if (kind === undefined) throw new Error(`input kind ${kindName} is not in the protocol`);
    const size = this.header.bytes + kind.bytes;
    if (size > this.maxBytes) throw new Error(`a ${kindName} message would be ${size} bytes`);
    const data = new ArrayBuffer(size);
    const view = new DataView(data);
    const header = { version: this.version, kind: kind.code, input_id: inputId, sent_us: sentUs };
    let offset = 0;
    this.header.codes.forEach((code, i) => {
      const name = this.header.fields[i];
      offset = writeInt(view, offset, code, header[name], this.header.littleEndian, name);
    });
    kind.codes.forEach((code, i) => {
      const name = kind.fields[i];
      if (!(name in fields)) throw new Error(`${kindName} needs ${name}`);
      offset = writeInt(view, offset, code, fields[name], kind.littleEndian, name, this.range(kindName, name));
    });
    return { channel: kind.channel, data };
  }

  /** [low, high] a field of a kind may take (Numbers): its own range where the protocol narrows it, else its
   * struct type's. The page scales and clamps what it reads from the DOM into these. */
  range(kindName, field) {
    const kind = this.kinds[kindName];
    const narrowed = kind.ranges?.[field];
    if (narrowed) return narrowed.map(Number);
    return codeRange(kind.codes[kind.fields.indexOf(field)]).map(Number);
  }

  /** KEY flags from the description's key_flags. */
  keyFlags(down, repeat = false) {
    const flags = this.input.key_flags;
    return (down ? flags.down : 0) | (repeat ? flags.repeat : 0);
  }
}

function camel(name) {
  return name.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
}
