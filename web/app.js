// remotemedia-webrtc demo: microphone -> server pipeline -> speakers (echo), or, with a room,
// everyone else's audio and video (room.js), over WebSocket JSON-RPC signaling
// (docs/signaling.md). No build step; state for tests lives on window.rmState.
'use strict';

const SERVER = 'remotemedia-server';
const $ = (id) => document.getElementById(id);
const state = (window.rmState = {
  status: 'idle', iceState: 'new', connectionState: 'new', peerId: null,
  sentDbfs: -Infinity, returnedDbfs: -Infinity, returnedFrequencyHz: 0,
  dataEcho: [], messages: [], vadEvents: [], stats: {}, errors: [],
  // Final transcripts and turn ends of a speech pipeline (voice_echo), and the live partial.
  transcripts: [], turns: [], partial: '',
});

function setStatus(text) { state.status = text; $('status').textContent = text; }
function fail(err) { state.errors.push(String(err)); setStatus('error: ' + err); console.error(err); }

// ---- JSON-RPC over WebSocket -------------------------------------------------------------
class Signaling {
  constructor(url, onNotification) {
    this.pending = new Map();
    this.nextId = 1;
    this.onNotification = onNotification;
    this.ws = new WebSocket(url);
    this.opened = new Promise((resolve, reject) => {
      this.ws.onopen = resolve;
      this.ws.onerror = () => reject(new Error('WebSocket failed'));
    });
    this.ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    this.ws.onclose = (event) => setStatus(`signaling closed (${event.code} ${event.reason})`);
  }
  receive(msg) {
    if (msg.method) { this.onNotification(msg.method, msg.params); return; }
    const waiter = this.pending.get(msg.id);
    if (!waiter) { if (msg.error) fail(msg.error.message); return; }
    this.pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(`${msg.error.message} (${msg.error.code})`));
    else waiter.resolve(msg.result);
  }
  call(method, params) {
    const id = this.nextId++;
    this.ws.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
  close() { this.ws.close(1000, 'bye'); }
}

// ---- DataBuffer (proto/remotemedia/v1/common.proto), text and json only --------------------
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
function varint(n) { const out = []; while (n > 127) { out.push((n & 127) | 128); n >>>= 7; } out.push(n); return out; }
function field(num, bytes) { return [...varint((num << 3) | 2), ...varint(bytes.length), ...bytes]; }
function encodeText(text) {
  // DataBuffer.text = 5 -> TextBuffer { text_data = 1 (bytes), encoding = 2 }
  return new Uint8Array(field(5, [...field(1, utf8.encode(text)), ...field(2, utf8.encode('utf-8'))]));
}
function readFields(bytes) {
  const fields = [];
  let i = 0;
  const readVarint = () => { let n = 0, shift = 0, b; do { b = bytes[i++]; n += (b & 127) * 2 ** shift; shift += 7; } while (b & 128); return n; };
  while (i < bytes.length) {
    const key = readVarint(), num = Math.floor(key / 8), wire = key & 7;
    if (wire === 0) { fields.push([num, readVarint()]); }
    else if (wire === 2) { const len = readVarint(); fields.push([num, bytes.subarray(i, i + len)]); i += len; }
    else if (wire === 5) { i += 4; } else if (wire === 1) { i += 8; } else break;
  }
  return fields;
}
function decodeDataBuffer(bytes) {
  for (const [num, value] of readFields(bytes)) {
    const inner = (n) => { const f = readFields(value).find(([k]) => k === n); return f ? fromUtf8.decode(f[1]) : ''; };
    if (num === 5) return { kind: 'text', value: inner(1) };
    if (num === 4) return { kind: 'json', value: inner(1), schema: inner(2) };
    if (num === 1) return { kind: 'audio', value: `${value.length} bytes` };
    if (num === 6) return { kind: 'binary', value: `${value.length} bytes` };
    if (num === 7) return { kind: 'control', value: `${value.length} bytes` };
  }
  return { kind: 'empty', value: '' };
}

// ---- audio analysis ----------------------------------------------------------------------
function dbfs(analyser, buf) {
  analyser.getFloatTimeDomainData(buf);
  let sum = 0; for (const x of buf) sum += x * x;
  return 10 * Math.log10(sum / buf.length || 1e-12);
}
function dominantHz(analyser, spectrum, rate) {
  analyser.getFloatFrequencyData(spectrum);
  const bin = rate / analyser.fftSize;
  let best = -1;
  for (let i = Math.ceil(50 / bin); i < Math.min(spectrum.length - 1, 5000 / bin); i++) {
    if (best < 0 || spectrum[i] > spectrum[best]) best = i;
  }
  if (best < 1 || spectrum[best] < -90) return 0;
  const [a, b, c] = [spectrum[best - 1], spectrum[best], spectrum[best + 1]];
  const shift = (a - c) / (2 * (a - 2 * b + c) || 1);
  return (best + shift) * bin;
}
function meter(id, value) {
  $(id + '-meter').value = Math.max(-60, value);
  $(id + '-db').textContent = Number.isFinite(value) ? `${value.toFixed(1)} dBFS` : '-∞ dBFS';
}

// ---- the call ----------------------------------------------------------------------------
const ROOM_NAME = /^[A-Za-z0-9_-]{1,64}$/;
let pc, signaling, channel, audioCtx, room, timers = [];

// Offers and answers on `pc` run one at a time, in order: our offer, then the server's offers
// (rooms), so a server offer never meets a half-applied description.
let negotiation = Promise.resolve();
function negotiate(step) {
  const done = negotiation.then(step);
  negotiation = done.catch(() => {});
  return done;
}

function log(list, text) {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  $(list).append(li);
  li.scrollIntoView({ block: 'nearest' });
}

/**
 * The microphone, and the camera when asked for and present (a room works without one).
 * Noise suppression and gain control stay off so tones and music pass unchanged; echo
 * cancellation is for rooms (speakers playing others next to the microphone): it also takes
 * a steady test tone for echo while the other side plays one, so tests untick it (?aec=0).
 */
async function openMedia({ camera, simulcast, echoCancellation }) {
  const audio = { echoCancellation, noiseSuppression: false, autoGainControl: false };
  if (camera) {
    // Simulcast needs 360 p: Chromium sends one layer only below 640x360.
    const video = simulcast ? { width: 640, height: 360, frameRate: 15 } : { width: 320, height: 240, frameRate: 15 };
    try {
      return await navigator.mediaDevices.getUserMedia({ audio, video });
    } catch (err) {
      console.warn('no camera, audio only:', err);
    }
  }
  return navigator.mediaDevices.getUserMedia({ audio });
}

/**
 * The camera's simulcast layers, lowest first (the server forwards each subscriber the
 * highest that fits its path and its `max_height`; docs/signaling.md, "Rooms").
 */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 2, maxBitrate: 150000 },
  { rid: 'f', maxBitrate: 700000 },
];

/** The call's settings can change only while no call runs. */
function setInputsDisabled(disabled) {
  for (const id of ['start', 'room', 'camera', 'aec', 'simulcast', 'manifest']) $(id).disabled = disabled;
}

async function start() {
  const page = new URLSearchParams(location.search);
  const roomName = $('room').value.trim();
  if (roomName && !ROOM_NAME.test(roomName)) throw new Error(`room "${roomName}": 1–64 of A–Z a–z 0–9 _ -`);
  const manifest = $('manifest').value.trim();
  if (manifest && !ROOM_NAME.test(manifest)) throw new Error(`pipeline "${manifest}": 1–64 of A–Z a–z 0–9 _ -`);
  setInputsDisabled(true);
  setStatus('opening microphone');
  const inRoom = Boolean(roomName);
  const simulcast = inRoom && $('simulcast').checked;
  const mic = await openMedia({ camera: inRoom && $('camera').checked, simulcast, echoCancellation: inRoom && $('aec').checked });
  audioCtx = new AudioContext({ sampleRate: 48000 });
  await audioCtx.resume();
  const sent = audioCtx.createAnalyser();
  sent.fftSize = 2048;
  audioCtx.createMediaStreamSource(mic).connect(sent);

  pc = new RTCPeerConnection({ iceServers: [] });
  mic.getTracks().forEach((t) => {
    if (simulcast && t.kind === 'video') pc.addTransceiver(t, { direction: 'sendrecv', streams: [mic], sendEncodings: SIMULCAST_LAYERS });
    else pc.addTrack(t, mic);
  });
  // With --auth-secret the page is opened as /?token=<JWT>&peer_id=<its sub>.
  state.peerId = page.get('peer_id') || 'browser-' + Math.random().toString(36).slice(2, 10);
  let returned = null;
  if (roomName) room = new RoomCall({ name: roomName, self: state.peerId, pc, audioCtx, local: mic, sent });
  else returned = startEcho(audioCtx);
  pc.oniceconnectionstatechange = () => { state.iceState = pc.iceConnectionState; $('ice').textContent = pc.iceConnectionState; };
  pc.onconnectionstatechange = () => {
    state.connectionState = pc.connectionState;
    if (pc.connectionState === 'connected') setStatus('connected');
  };

  const remoteReady = { done: false, queue: [] };
  const addRemote = (c) => pc.addIceCandidate(c).catch(fail);
  const token = page.get('token');
  const query = token ? `?access_token=${encodeURIComponent(token)}` : '';
  signaling = new Signaling(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws${query}`, (method, p) => {
    if (method === 'peer.ice_candidate' && p.from === SERVER) {
      const c = p.candidate ? { candidate: p.candidate, sdpMid: p.sdp_mid, sdpMLineIndex: p.sdp_mline_index } : null;
      if (c === null) return;
      if (remoteReady.done) addRemote(c); else remoteReady.queue.push(c);
    } else if (method === 'peer.disconnected' && p.peer_id === SERVER) {
      setStatus('the server closed the session');
    } else if (room) {
      room.notification(method, p);
    }
  });
  await signaling.opened;
  const announce = {
    peer_id: state.peerId,
    capabilities: { audio: true, video: mic.getVideoTracks().length > 0, data: true },
    metadata: { client: 'demo page' },
  };
  if (roomName) announce.room = roomName;
  if (manifest) announce.metadata.manifest = manifest;
  const ack = await signaling.call('peer.announce', announce);
  if (room) room.joined(signaling, ack.other_peers || []);
  pc.onicecandidate = (event) => {
    const c = event.candidate;
    signaling.call('peer.ice_candidate', {
      to: SERVER, candidate: c ? c.candidate : '', sdp_mid: c ? c.sdpMid : null, sdp_mline_index: c ? c.sdpMLineIndex : 0,
    }).catch(fail);
  };
  setStatus('offering');
  await negotiate(async () => {
    await pc.setLocalDescription(await pc.createOffer());
    const answer = await signaling.call('peer.offer', { to: SERVER, sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
  });
  remoteReady.done = true;
  remoteReady.queue.splice(0).forEach(addRemote);
  setStatus('connecting');
  $('stop').disabled = false;

  const timeBuf = new Float32Array(2048);
  const spectrum = new Float32Array(4096);
  timers.push(setInterval(() => {
    state.sentDbfs = dbfs(sent, timeBuf); meter('sent', state.sentDbfs);
    if (room) room.tick();
    const analyser = returned && returned.analyser;
    if (!analyser) return;
    state.returnedDbfs = dbfs(analyser, timeBuf); meter('returned', state.returnedDbfs);
    state.returnedFrequencyHz = dominantHz(analyser, spectrum, audioCtx.sampleRate);
    $('freq').textContent = state.returnedFrequencyHz ? `${state.returnedFrequencyHz.toFixed(1)} Hz` : '–';
  }, 100));
  timers.push(setInterval(updateStats, 1000));
}

/** Echo mode: the data channel, and the returned track's analyser (in the object returned). */
function startEcho(ctx) {
  channel = pc.createDataChannel('data');
  channel.binaryType = 'arraybuffer';
  channel.onopen = () => { $('text').disabled = false; $('send').disabled = false; };
  channel.onmessage = (event) => {
    const msg = typeof event.data === 'string' ? { kind: 'text', value: event.data } : decodeDataBuffer(new Uint8Array(event.data));
    state.messages.push(msg);
    if (msg.kind === 'text') state.dataEcho.push(msg.value);
    if (msg.kind === 'json' && /vad|speech/i.test(msg.value)) { state.vadEvents.push(msg.value); log('vad', msg.value); }
    if (msg.kind === 'json') showSpeech(msg.value);
    log('messages', `${msg.kind}: ${msg.value}`);
  };
  const returned = { analyser: null };
  pc.ontrack = (event) => {
    const stream = event.streams[0] || new MediaStream([event.track]);
    $('remote').srcObject = stream; // Chrome feeds WebAudio from a remote stream only while it plays
    returned.analyser = ctx.createAnalyser();
    returned.analyser.fftSize = 8192;
    ctx.createMediaStreamSource(stream).connect(returned.analyser);
  };
  return returned;
}

async function updateStats() {
  if (!pc) return;
  const s = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === 'candidate-pair' && r.nominated && r.currentRoundTripTime !== undefined) s.rttMs = r.currentRoundTripTime * 1000;
    if (r.type === 'inbound-rtp' && r.kind === 'audio') {
      s.jitterMs = r.jitter * 1000;
      s.packetsLost = r.packetsLost;
      if (r.jitterBufferEmittedCount) s.jitterBufferDelayMs = (r.jitterBufferDelay / r.jitterBufferEmittedCount) * 1000;
    }
  });
  state.stats = s;
  const ms = (v) => (v === undefined ? '–' : `${v.toFixed(1)} ms`);
  $('stat-rtt').textContent = ms(s.rttMs);
  $('stat-jitter').textContent = ms(s.jitterMs);
  $('stat-lost').textContent = s.packetsLost === undefined ? '–' : String(s.packetsLost);
  $('stat-jbd').textContent = ms(s.jitterBufferDelayMs);
}

function stop() {
  timers.forEach(clearInterval); timers = [];
  if (room) room.close();
  if (pc) pc.close();
  if (signaling) signaling.close();
  if (audioCtx) audioCtx.close();
  pc = signaling = channel = audioCtx = room = null;
  negotiation = Promise.resolve();
  setStatus('stopped');
  setInputsDisabled(false);
  $('stop').disabled = true; $('send').disabled = true; $('text').disabled = true;
}

/** A speech pipeline's transcripts: the live partial in place, finals and turn ends listed. */
function showSpeech(json) {
  let event;
  try { event = JSON.parse(json); } catch { return; }
  if (event.type === 'transcript' && !event.final) {
    state.partial = event.text || '';
    $('partial').textContent = state.partial ? `… ${state.partial}` : '';
  } else if (event.type === 'transcript') {
    state.partial = '';
    $('partial').textContent = '';
    if (event.text) { state.transcripts.push(event.text); log('transcript', event.text); }
  } else if (event.type === 'turn_end') {
    state.turns.push(event.text || '');
    log('transcript', `(turn ends: ${event.text || ''})`);
  }
}

/** Sends a DataBuffer{text} on the data channel; exposed for tests. */
function sendText(text) {
  if (!channel || channel.readyState !== 'open') return false;
  channel.send(encodeText(text));
  log('messages', `sent: ${text}`);
  return true;
}
window.rmSendText = sendText;

$('start').addEventListener('click', () => start().catch(fail));
$('stop').addEventListener('click', stop);
$('text-form').addEventListener('submit', (event) => { event.preventDefault(); sendText($('text').value); });
// ?room=<name> fills the room field, ?camera=0 and ?aec=0 untick the camera and echo
// cancellation, ?simulcast=1 ticks simulcast, ?autostart starts at once (after room.js has loaded: the scripts run before
// DOMContentLoaded).
{
  const page = new URLSearchParams(location.search);
  if (page.has('room')) $('room').value = page.get('room');
  if (page.has('manifest')) $('manifest').value = page.get('manifest');
  if (page.get('camera') === '0') $('camera').checked = false;
  if (page.get('aec') === '0') $('aec').checked = false;
  if (page.get('simulcast') === '1') $('simulcast').checked = true;
  if (page.has('autostart')) window.addEventListener('DOMContentLoaded', () => start().catch(fail));
}
