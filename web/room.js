// Rooms on the demo page (issue #15; docs/signaling.md, "Rooms (media on one server)").
//
// The page's one connection to `remotemedia-server` carries its microphone (and camera) out and
// every other participant's tracks in. The server adds and retires those tracks with its own
// offers (`peer.offer` from `remotemedia-server`, answered with `peer.answer` + `offer_id`), and
// talks about them on the `remotemedia-room` data channel: the track map, the active speakers,
// publishers' mutes; the page sends `subscribe` requests there (pin, mute).
//
// Loaded after app.js and uses its helpers (SERVER, $, state, fail, negotiate, dbfs,
// dominantHz, decodeDataBuffer, field, utf8); app.js creates a RoomCall when a room is given.
'use strict';

const ROOM_CHANNEL = 'remotemedia-room';
/** Entries kept of the room channel's message logs (for the page's state and tests). */
const ROOM_LOG = 100;

/** A room channel message as DataBuffer{json = 4: JsonData{json_payload = 1, schema_type = 2}}. */
function encodeRoomMessage(message) {
  const json = [...field(1, utf8.encode(JSON.stringify(message))), ...field(2, utf8.encode('room'))];
  return new Uint8Array(field(4, json));
}

function pushBounded(list, item) {
  list.push(item);
  if (list.length > ROOM_LOG) list.splice(0, list.length - ROOM_LOG);
}

function element(tag, props = {}, children = []) {
  const el = Object.assign(document.createElement(tag), props);
  el.append(...children);
  return el;
}

/** One participant's tile: its name, video, level meter, and (others') pin and mute buttons. */
class Tile {
  constructor(room, peerId, self) {
    this.room = room;
    this.peerId = peerId;
    this.self = self;
    this.pinned = false; // subscribe video "pin" instead of "auto"
    this.muted = false; // subscribe audio and video "off"
    this.publisherMuted = { audio: false, video: false }; // from the server's "muted" messages
    this.audioTrack = this.videoTrack = null;
    this.analyser = this.source = null;
    this.levelDbfs = -Infinity;
    this.frequencyHz = 0;
    this.timeBuf = new Float32Array(2048);
    this.spectrum = null;

    this.video = element('video', { autoplay: true, playsInline: true, muted: true, hidden: true });
    this.audio = element('audio', { autoplay: true });
    this.meter = element('meter', { min: -60, max: 0, low: -30, high: -6, optimum: -20, value: -60 });
    this.meter.setAttribute('aria-label', `${peerId} level`);
    this.badges = element('div', { className: 'badges' });
    this.el = element('article', { className: self ? 'tile self' : 'tile' }, [
      element('h3', { textContent: peerId }), this.video, this.meter, this.badges,
    ]);
    this.el.dataset.peer = peerId;
    if (!self) {
      this.pinButton = this.button('Pin video', () => this.togglePin());
      this.muteButton = this.button('Mute', () => this.toggleMute());
      this.el.append(this.audio, this.pinButton, ' ', this.muteButton);
    }
  }

  button(label, onClick) {
    const b = element('button', { type: 'button', textContent: label });
    b.setAttribute('aria-pressed', 'false');
    b.addEventListener('click', onClick);
    return b;
  }

  /** What this subscriber asks the server for, per kind. */
  mode(kind) {
    if (this.muted) return 'off';
    return kind === 'video' && this.pinned ? 'pin' : 'auto';
  }

  togglePin() {
    this.pinned = !this.pinned;
    this.pinButton.setAttribute('aria-pressed', String(this.pinned));
    this.room.subscribe(this.peerId, 'video', this.mode('video'));
  }

  toggleMute() {
    this.muted = !this.muted;
    this.muteButton.setAttribute('aria-pressed', String(this.muted));
    this.audio.muted = this.muted; // silent at once, whatever the server does meanwhile
    this.room.subscribe(this.peerId, 'audio', this.mode('audio'));
    this.room.subscribe(this.peerId, 'video', this.mode('video'));
    this.showBadges();
  }

  /** Plays `track` (or nothing) and measures it. */
  setAudio(track) {
    if (this.audioTrack === track) return;
    if (this.source) this.source.disconnect();
    this.audioTrack = track;
    this.source = this.analyser = null;
    this.levelDbfs = -Infinity;
    this.frequencyHz = 0;
    if (!track) { this.audio.srcObject = null; return; }
    const stream = new MediaStream([track]);
    this.audio.srcObject = stream; // Chrome feeds WebAudio from a remote stream only while it plays
    const ctx = this.room.ctx;
    this.analyser = ctx.createAnalyser();
    this.analyser.fftSize = 8192;
    this.spectrum = new Float32Array(this.analyser.frequencyBinCount);
    this.source = ctx.createMediaStreamSource(stream);
    this.source.connect(this.analyser);
  }

  setVideo(track) {
    if (this.videoTrack === track) return;
    this.videoTrack = track;
    this.video.srcObject = track ? new MediaStream([track]) : null;
    this.video.hidden = !track;
  }

  setPublisherMuted(kind, muted) {
    if (kind !== 'audio' && kind !== 'video') return;
    this.publisherMuted[kind] = muted;
    this.showBadges();
  }

  showBadges() {
    const badges = [];
    if (this.publisherMuted.audio) badges.push('mic muted');
    if (this.publisherMuted.video) badges.push('camera off');
    if (this.muted) badges.push('muted by you');
    this.badges.textContent = badges.join(' · ');
  }

  /** Level and dominant frequency, every 100 ms. */
  tick() {
    if (!this.analyser) { this.meter.value = -60; return; }
    this.levelDbfs = dbfs(this.analyser, this.timeBuf);
    this.meter.value = Math.max(-60, this.levelDbfs);
    if (this.spectrum) this.frequencyHz = dominantHz(this.analyser, this.spectrum, this.room.ctx.sampleRate);
  }

  remove() {
    this.setAudio(null);
    this.setVideo(null);
    this.el.remove();
  }
}

/** The page in a room: tiles, server offers and the room channel. */
class RoomCall {
  /** `sent` is the microphone's analyser (the own tile's meter). */
  constructor({ name, self, pc, audioCtx, local, sent }) {
    this.name = name;
    this.self = self;
    this.pc = pc;
    this.ctx = audioCtx;
    this.signaling = null;
    this.channel = null;
    this.tiles = new Map(); // peer id -> Tile
    this.remote = new Map(); // mid -> { peer, kind, track }: what each received m-line carries
    this.trackMap = new Map(); // mid -> the last "tracks" entry (owner when a stream has no id)
    this.lastOfferId = null;
    // Exposed as rmState.room (and through the rmRoom* functions below) for tests.
    this.state = state.room = {
      name, peers: [], speakers: null, frequencies: {}, levels: {}, tracks: [],
      messages: [], sent: [], offersAnswered: 0, ownTracksReceived: 0,
    };

    document.body.classList.add('in-room');
    $('room-section').hidden = false;
    $('room-name').textContent = name;
    const me = this.tile(self, true);
    me.analyser = sent;
    me.setVideo(local.getVideoTracks()[0] || null);

    pc.ontrack = (event) => this.onTrack(event);
    pc.ondatachannel = (event) => {
      if (event.channel.label === ROOM_CHANNEL) this.openChannel(event.channel);
    };
  }

  /** After the announce: the participants already in the room. */
  joined(signaling, otherPeers) {
    this.signaling = signaling;
    otherPeers.filter((id) => id !== SERVER).forEach((id) => this.tile(id));
  }

  /** Signaling notifications other than the server's candidates. */
  notification(method, p) {
    if (method === 'peer.joined' && p.peer_id !== SERVER) this.tile(p.peer_id);
    else if (method === 'peer.left') this.removePeer(p.peer_id);
    else if (method === 'peer.offer' && p.from === SERVER) this.serverOffer(p);
  }

  /** The tile of `peerId`, created on first use. */
  tile(peerId, self = false) {
    let tile = this.tiles.get(peerId);
    if (!tile) {
      tile = new Tile(this, peerId, self);
      this.tiles.set(peerId, tile);
      $('tiles').append(tile.el);
      this.state.peers = [...this.tiles.keys()].filter((id) => id !== this.self);
      if (this.speakers) this.showSpeakers(this.speakers);
    }
    return tile;
  }

  removePeer(peerId) {
    if (peerId === this.self) return;
    for (const [mid, entry] of this.remote) if (entry.peer === peerId) this.remote.delete(mid);
    const tile = this.tiles.get(peerId);
    if (tile) tile.remove();
    this.tiles.delete(peerId);
    this.state.peers = [...this.tiles.keys()].filter((id) => id !== this.self);
  }

  /**
   * Answers a server offer, after any negotiation in progress. The server re-sends an offer
   * left unanswered for 10 s with the same id: one already answered is not answered again.
   */
  serverOffer({ offer_id: offerId, sdp }) {
    negotiate(async () => {
      if (offerId === this.lastOfferId) return;
      this.lastOfferId = offerId;
      await this.pc.setRemoteDescription({ type: 'offer', sdp });
      await this.pc.setLocalDescription(await this.pc.createAnswer());
      await this.signaling.call('peer.answer', { to: SERVER, sdp: this.pc.localDescription.sdp, offer_id: offerId });
      this.state.offersAnswered++;
      this.prune();
    }).catch(fail);
  }

  /** A forwarded track: its stream id is the publisher (a=msid), else the track map says. */
  onTrack(event) {
    const mid = event.transceiver.mid;
    const known = this.trackMap.get(mid);
    const peer = (event.streams[0] && event.streams[0].id) || (known && known.peer);
    if (!peer) return;
    if (peer === this.self) { this.state.ownTracksReceived++; return; }
    const previous = this.remote.get(mid);
    this.remote.set(mid, { peer, kind: event.track.kind, track: event.track });
    if (previous && previous.peer !== peer) this.refresh(previous.peer);
    this.refresh(peer);
  }

  /**
   * Drops the m-lines that no longer receive: a departed track's line goes inactive in the
   * server's offer (and may later carry someone else's track, announced by a new ontrack).
   */
  prune() {
    const receiving = new Set(this.pc.getTransceivers()
      .filter((t) => !t.stopped && (t.currentDirection === 'recvonly' || t.currentDirection === 'sendrecv'))
      .map((t) => t.mid));
    for (const [mid, entry] of this.remote) {
      if (receiving.has(mid)) continue;
      this.remote.delete(mid);
      this.refresh(entry.peer);
    }
  }

  /** Puts a participant's current tracks on its tile. */
  refresh(peerId) {
    if (!this.tiles.has(peerId) && ![...this.remote.values()].some((e) => e.peer === peerId)) return;
    const tile = this.tile(peerId);
    const track = (kind) => {
      for (const entry of this.remote.values()) if (entry.peer === peerId && entry.kind === kind) return entry.track;
      return null;
    };
    tile.setAudio(track('audio'));
    tile.setVideo(track('video'));
  }

  openChannel(channel) {
    this.channel = channel;
    channel.binaryType = 'arraybuffer';
    channel.onmessage = (event) => this.onRoomMessage(event.data);
    // Preferences set before the channel opened (or on a previous one) are sent now.
    channel.onopen = () => {
      for (const tile of this.tiles.values()) {
        if (tile.self) continue;
        if (tile.muted) this.subscribe(tile.peerId, 'audio', 'off');
        if (tile.muted || tile.pinned) this.subscribe(tile.peerId, 'video', tile.mode('video'));
      }
    };
  }

  /** Server -> client: DataBuffer{json{schema_type:"room"}} (plain text JSON accepted too). */
  onRoomMessage(data) {
    let text = data;
    if (typeof data !== 'string') {
      const buffer = decodeDataBuffer(new Uint8Array(data));
      if (buffer.kind !== 'json') return;
      text = buffer.value;
    }
    let message;
    try { message = JSON.parse(text); } catch (err) { console.warn('room channel: not JSON', text); return; }
    pushBounded(this.state.messages, message);
    switch (message.type) {
      case 'tracks':
        this.trackMap = new Map((message.tracks || []).map((t) => [t.mid, t]));
        this.state.tracks = message.tracks || [];
        break;
      case 'active_speakers':
        this.showSpeakers(Array.isArray(message.peers) ? message.peers : []);
        break;
      case 'muted':
        if (this.tiles.has(message.peer)) this.tile(message.peer).setPublisherMuted(message.kind, Boolean(message.muted));
        break;
      default:
        break; // "pipeline" and later types: kept in the log only
    }
  }

  /** Highlights the active speakers: all of them lightly, the loudest (first) strongly. */
  showSpeakers(peers) {
    this.speakers = peers;
    this.state.speakers = peers;
    for (const [id, tile] of this.tiles) {
      tile.el.classList.toggle('speaking', peers.includes(id));
      tile.el.classList.toggle('speaker', peers[0] === id);
    }
  }

  /**
   * Client -> server: how this page wants `peer`'s track of `kind` ("auto", "pin", "off"),
   * and for simulcast video the tallest layer it wants (`maxHeight`, pixels; null lifts the
   * limit, undefined keeps the last one).
   * Returns whether it was sent (the room channel opens with the server's first offer).
   */
  subscribe(peer, kind, mode, maxHeight) {
    const message = { type: 'subscribe', peer, kind, mode };
    if (maxHeight !== undefined) message.max_height = maxHeight;
    pushBounded(this.state.sent, message);
    if (!this.channel || this.channel.readyState !== 'open') return false;
    this.channel.send(encodeRoomMessage(message));
    return true;
  }

  /** Every 100 ms: meters, and the dominant frequency of each participant's audio. */
  tick() {
    const frequencies = {}, levels = {};
    for (const [id, tile] of this.tiles) {
      tile.tick();
      if (tile.self || !tile.audioTrack) continue;
      frequencies[id] = tile.frequencyHz;
      levels[id] = tile.levelDbfs;
    }
    this.state.frequencies = frequencies;
    this.state.levels = levels;
  }

  close() {
    for (const tile of this.tiles.values()) tile.remove();
    this.tiles.clear();
    this.remote.clear();
    if (this.channel) this.channel.close();
    document.body.classList.remove('in-room');
    $('room-section').hidden = true;
  }
}

// Hooks for tests and the console.
/** {peer id: dominant frequency in Hz (0: silence)} of every participant whose audio plays. */
window.rmRoomFrequencies = () => ({ ...((state.room && state.room.frequencies) || {}) });
/** The last `active_speakers` list (null before the first). */
window.rmRoomSpeakers = () => (state.room ? state.room.speakers : null);
/** The tiles: peer id, whether it is this page's own, whether video and audio play on it. */
window.rmRoomTiles = () => [...document.querySelectorAll('#tiles .tile')].map((el) => ({
  peer: el.dataset.peer,
  self: el.classList.contains('self'),
  videoWidth: el.querySelector('video').videoWidth,
  videoHeight: el.querySelector('video').videoHeight,
  audio: Boolean(el.querySelector('audio') && el.querySelector('audio').srcObject),
}));
/**
 * Sends a subscribe request as the pin and mute buttons do (with `maxHeight`, the tallest
 * simulcast layer wanted, null for no limit); returns whether it was sent.
 */
window.rmRoomSubscribe = (peer, kind, mode, maxHeight) => Boolean(room && room.subscribe(peer, kind, mode, maxHeight));
