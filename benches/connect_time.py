#!/usr/bin/env python3
"""Offer->connected with clients other than our own webrtc-crate one (benches/connect_time.sh).

Measures, run after run, our server (WebSocket `/ws`, `peer.offer` to remotemedia-server) and
Janus' EchoTest (HTTP API) with the same client: aiortc (Python) or headless Chromium (driven
over DevTools). Each run: a fresh peer connection whose offer carries its candidates (aiortc
gathers before it offers; Chromium's offer is taken once gathering completed), one audio
transceiver (sendrecv), no trickled candidate either way unless --trickle. The clock starts when
the offer leaves and stops at connectionState "connected" (ICE and DTLS done). Prints one line
per target with the median, then the ratio.
"""

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import aiohttp

SERVER = "remotemedia-server"
# aioice's Ta: `Connection.connect()` sleeps this long after starting its first check.
AIOICE_CHECK_PACING_S = 0.02


# ---------------------------------------------------------------- signaling, shared by both


class Ours:
    """Our `/ws` JSON-RPC: announce, then peer.offer to the server returns the answer."""

    def __init__(self, session, url):
        self.session, self.url, self.next_id = session, url, 0

    async def open(self, peer_id):
        self.ws = await self.session.ws_connect(self.url)
        await self.call("peer.announce", {"peer_id": peer_id})

    async def call(self, method, params):
        self.next_id += 1
        await self.ws.send_str(json.dumps(
            {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            if message.get("method") == "peer.ice_candidate":
                self.trickled.append(message["params"])

    async def offer(self, sdp):
        self.trickled = []
        result = await self.call("peer.offer", {"to": SERVER, "sdp": sdp})
        return result["sdp"]

    async def trickled_candidates(self):
        """Server candidates that trickled (those read so far, then 50 ms more)."""
        try:
            while True:
                message = await self.ws.receive(timeout=0.05)
                data = json.loads(message.data)
                if data.get("method") == "peer.ice_candidate":
                    self.trickled.append(data["params"])
        except (asyncio.TimeoutError, TypeError, ValueError):
            pass
        return [(c["candidate"], c.get("sdp_mid"), c.get("sdp_mline_index") or 0)
                for c in self.trickled if c.get("candidate")]

    async def close(self):
        try:
            await self.call("peer.disconnect", {"to": SERVER})
        finally:
            await self.ws.close()


class Janus:
    """Janus' HTTP API: create, attach EchoTest, message with the offer, long-poll the answer."""

    def __init__(self, session, url):
        self.session, self.url = session, url

    async def post(self, path, body):
        body = dict(body, transaction=os.urandom(6).hex())
        async with self.session.post(self.url + path, data=json.dumps(body)) as reply:
            data = json.loads(await reply.text())
        if data.get("janus") == "error":
            raise RuntimeError(f"janus: {data}")
        return data

    async def open(self, _peer_id):
        self.id = (await self.post("", {"janus": "create"}))["data"]["id"]
        attach = {"janus": "attach", "plugin": "janus.plugin.echotest"}
        self.handle = (await self.post(f"/{self.id}", attach))["data"]["id"]

    async def offer(self, sdp):
        await self.post(f"/{self.id}/{self.handle}", {
            "janus": "message", "body": {"audio": True, "video": False},
            "jsep": {"type": "offer", "sdp": sdp, "trickle": False}})
        while True:
            async with self.session.get(f"{self.url}/{self.id}?maxev=10") as reply:
                events = json.loads(await reply.text())
            for event in events if isinstance(events, list) else [events]:
                if "jsep" in event:
                    return event["jsep"]["sdp"]

    async def trickled_candidates(self):
        return []  # Janus' candidates are in its answer

    async def close(self):
        await self.post(f"/{self.id}", {"janus": "destroy"})


# ---------------------------------------------------------------- clients


async def aiortc_run(signaling, trickle):
    """One connect; returns (offer->connected ms, the client's own floor ms).

    The floor is what no server can take away: aiortc's own CPU time before its ICE checks
    start and after ICE completes (answer parsing, setRemoteDescription, its DTLS flights),
    plus aioice's check pacing (`connect()` sleeps 20 ms after starting the first check, even
    when that check succeeds at once). Those phases do not overlap, so their sum bounds the
    offer->connected time that any server, however fast, can reach with this client.
    """
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.sdp import candidate_from_sdp

    pc = RTCPeerConnection()
    connected = asyncio.get_running_loop().create_future()
    cpu = {}

    @pc.on("connectionstatechange")
    def _changed():
        if pc.connectionState == "connected" and not connected.done():
            cpu["connected"] = time.process_time()
            connected.set_result(time.perf_counter())
        elif pc.connectionState == "failed" and not connected.done():
            connected.set_exception(RuntimeError("connection failed"))

    @pc.on("iceconnectionstatechange")
    def _ice_changed():
        cpu.setdefault(pc.iceConnectionState, time.process_time())

    pc.addTransceiver("audio", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())  # gathers: the offer has candidates
    try:
        started, cpu["started"] = time.perf_counter(), time.process_time()
        answer = await signaling.offer(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        if trickle:
            for line, mid, index in await signaling.trickled_candidates():
                candidate = candidate_from_sdp(line.split(":", 1)[1])
                candidate.sdpMid, candidate.sdpMLineIndex = mid, index
                await pc.addIceCandidate(candidate)
        done = await asyncio.wait_for(connected, 10)
        floor = (cpu["checking"] - cpu["started"]) + AIOICE_CHECK_PACING_S \
            + (cpu["connected"] - cpu["completed"])
        return (done - started) * 1000, floor * 1000
    finally:
        await pc.close()


PAGE_JS = r"""
(async ({target, url, trickle}) => {
  const post = async (path, body) => {
    body.transaction = Math.random().toString(36).slice(2);
    const reply = await fetch(url + path, {method: 'POST', body: JSON.stringify(body)});
    const data = await reply.json();
    if (data.janus === 'error') throw new Error(JSON.stringify(data));
    return data;
  };
  let ws, nextId = 0, waiting = {}, trickled = [];
  const call = (method, params) => new Promise((resolve, reject) => {
    const id = ++nextId;
    waiting[id] = {resolve, reject};
    ws.send(JSON.stringify({jsonrpc: '2.0', id, method, params}));
  });
  let session, handle;
  if (target === 'ours') {
    ws = new WebSocket(url);
    ws.onmessage = (event) => {
      const m = JSON.parse(event.data);
      if (m.id && waiting[m.id]) {
        m.error ? waiting[m.id].reject(new Error(JSON.stringify(m.error)))
                : waiting[m.id].resolve(m.result);
        delete waiting[m.id];
      } else if (m.method === 'peer.ice_candidate') {
        trickled.push(m.params);
        if (trickle && pc.remoteDescription && m.params.candidate) {
          pc.addIceCandidate({candidate: m.params.candidate, sdpMid: m.params.sdp_mid,
                              sdpMLineIndex: m.params.sdp_mline_index || 0});
        }
      }
    };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    await call('peer.announce', {peer_id: 'chromium-' + Math.random().toString(36).slice(2)});
  } else {
    session = (await post('', {janus: 'create'})).data.id;
    handle = (await post('/' + session, {janus: 'attach', plugin: 'janus.plugin.echotest'})).data.id;
  }
  const pc = new RTCPeerConnection();
  const connected = new Promise((resolve, reject) => {
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') resolve(performance.now());
      if (pc.connectionState === 'failed') reject(new Error('connection failed'));
    };
  });
  pc.addTransceiver('audio', {direction: 'sendrecv'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && resolve();
  });
  const offer = pc.localDescription.sdp;
  const started = performance.now();
  let answer;
  if (target === 'ours') {
    answer = (await call('peer.offer', {to: 'remotemedia-server', sdp: offer})).sdp;
  } else {
    await post('/' + session + '/' + handle, {janus: 'message', body: {audio: true, video: false},
                                             jsep: {type: 'offer', sdp: offer, trickle: false}});
    while (!answer) {
      const events = await (await fetch(url + '/' + session + '?maxev=10')).json();
      for (const e of Array.isArray(events) ? events : [events]) if (e.jsep) answer = e.jsep.sdp;
    }
  }
  await pc.setRemoteDescription({type: 'answer', sdp: answer});
  if (trickle) {
    for (const c of trickled) if (c.candidate) {
      await pc.addIceCandidate({candidate: c.candidate, sdpMid: c.sdp_mid,
                                sdpMLineIndex: c.sdp_mline_index || 0});
    }
  }
  const done = await Promise.race([connected,
    new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 10000))]);
  pc.close();
  if (target === 'ours') { await call('peer.disconnect', {to: 'remotemedia-server'}); ws.close(); }
  else await post('/' + session, {janus: 'destroy'});
  return done - started;
})
"""


class Chromium:
    """Headless Chromium, one page, evaluated over DevTools."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--allow-loopback-in-peer-connection",
             # As tests/common/cdp.rs: host candidates as addresses, not .local names.
             "--disable-features=WebRtcHideLocalIpsWithMdns"]

    async def start(self, session, binary):
        self.profile = tempfile.mkdtemp(prefix="connect-time-chromium-")
        self.child = subprocess.Popen(
            [binary, *self.FLAGS, "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = os.path.join(self.profile, "DevToolsActivePort")
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            await asyncio.sleep(0.05)
        port = open(port_file).read().split()[0]
        async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            pages = [t for t in await reply.json() if t["type"] == "page"]
        self.ws = await session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self.next_id = 0

    async def evaluate(self, expression):
        self.next_id += 1
        await self.ws.send_str(json.dumps({"id": self.next_id, "method": "Runtime.evaluate",
                                           "params": {"expression": expression,
                                                      "awaitPromise": True,
                                                      "returnByValue": True}}))
        while True:
            message = json.loads((await self.ws.receive()).data)
            if message.get("id") == self.next_id:
                result = message["result"]
                if "exceptionDetails" in result:
                    raise RuntimeError(json.dumps(result["exceptionDetails"])[:400])
                return result["result"]["value"]

    async def run(self, target, url, trickle):
        args = json.dumps({"target": target, "url": url, "trickle": trickle})
        return await self.evaluate(f"{PAGE_JS}({args})")

    def stop(self):
        self.child.terminate()
        self.child.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


# ---------------------------------------------------------------- the bench


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--client", choices=["aiortc", "chromium"], required=True)
    parser.add_argument("--ours", help="ws://host:port/ws (omit: Janus only)")
    parser.add_argument("--janus", help="http://host:8088/janus (omit: ours only)")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--trickle", action="store_true",
                        help="also add the server's trickled candidates")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    targets = [(name, url) for name, url in [("ours", args.ours), ("janus", args.janus)] if url]
    times = {name: [] for name, _ in targets}
    floors = {name: [] for name, _ in targets}
    async with aiohttp.ClientSession() as session:
        browser = None
        if args.client == "chromium":
            browser = Chromium()
            await browser.start(session, args.chromium)
        try:
            # Interleaved, so drift in the machine's load hits both alike.
            for i in range(args.warmup + args.runs):
                for name, url in targets:
                    if browser:
                        ms = await browser.run(name, url, args.trickle)
                    else:
                        signaling = (Ours if name == "ours" else Janus)(session, url)
                        await signaling.open(f"aiortc-{os.getpid()}-{i}")
                        try:
                            ms, floor = await aiortc_run(signaling, args.trickle)
                        finally:
                            await signaling.close()
                        if i >= args.warmup:
                            floors[name].append(floor)
                    if i >= args.warmup:
                        times[name].append(ms)
        finally:
            if browser:
                browser.stop()
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{args.client} {name}: offer->connected median {medians[name]:.1f} ms "
              f"(n={len(values)}, min {min(values):.1f}, max {max(values):.1f})")
    for name, values in floors.items():
        if values:
            print(f"{args.client} {name}: the client's own floor median "
                  f"{statistics.median(values):.1f} ms (its CPU outside the 20 ms check pacing, "
                  "plus the pacing)")
    if "janus" in medians and "ours" in medians:
        print(f"{args.client} ours/janus: {medians['ours'] / medians['janus']:.2f}")
        if floors["ours"]:
            best = statistics.median(floors["ours"]) / medians["janus"]
            print(f"{args.client} best ours/janus any server could reach with this client "
                  f"(its floor over Janus' median): {best:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.stdout.flush()
