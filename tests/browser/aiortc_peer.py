"""An aiortc peer driven over stdin/stdout, one JSON object per line, with the same requests as
sdp_peer.mjs (publish_offer, set_answer, answer): an independent WebRTC stack (OpenSSL, libsrtp,
its own SDP code) that checks what the relay writes.
"""

import asyncio
import json
import sys

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

pcs: list[RTCPeerConnection] = []


async def handle(req: dict) -> dict:
    op = req.get("op")
    if op == "publish_offer":
        pc = RTCPeerConnection()
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        pcs.append(pc)
        return {"id": len(pcs) - 1, "sdp": pc.localDescription.sdp}
    if op == "set_answer":
        pc = pcs[req["id"]]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=req["sdp"], type="answer"))
        senders = []
        for t in pc.getTransceivers():
            codecs = [{"mimeType": c.mimeType, "payloadType": c.payloadType} for c in t._codecs]
            senders.append({"kind": t.kind, "codecs": codecs})
        return {"ok": True, "senders": senders, "signalingState": pc.signalingState}
    if op == "answer":
        pc = RTCPeerConnection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=req["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        pcs.append(pc)
        tracks = [{"mid": t.mid, "kind": t.kind} for t in pc.getTransceivers()]
        return {"id": len(pcs) - 1, "sdp": pc.localDescription.sdp, "tracks": tracks}
    raise ValueError(f"unknown op {op}")


async def main() -> None:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        if not line.strip():
            continue
        try:
            reply = await handle(json.loads(line))
        except Exception as e:  # every failure is an answer to the test, not a crash
            reply = {"error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    for pc in pcs:
        await pc.close()


if __name__ == "__main__":
    asyncio.run(main())
