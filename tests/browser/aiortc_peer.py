"""An aiortc peer driven over stdin/stdout, one JSON object per line, with the same requests as
sdp_peer.mjs: an independent WebRTC stack (aioice, OpenSSL DTLS, libsrtp, libvpx/libopus, its own
SDP code) that checks what the relay writes and that media through the relay decodes.

    {"op":"publish_offer"}               -> {"id":N,"sdp":"<offer>"}   audio + video, sendonly
    {"op":"set_answer","id":N,"sdp":...} -> {"ok":true,"senders":[...],"signalingState":...}
    {"op":"answer","sdp":"<offer>"}      -> {"id":M,"sdp":"<answer>","tracks":[{"mid","kind"}]}
        the tracks received on that connection are read and counted as they decode
    {"op":"stats","id":N}                -> {"connectionState","dtlsState","dtlsRole","srtpCipher",
        "framesDecoded","audioFramesDecoded","packetsReceived","packetsLost","packetsSent"}

`--loopback`: gather host candidates on 127.0.0.1 too. aioice leaves loopback out, and the tests
run the peer in a network namespace with only `lo` (Chromium gets the same from a flag).
"""

import asyncio
import json
import sys

import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack

pcs: list[RTCPeerConnection] = []
# Per peer connection: frames decoded from the tracks it receives, by kind.
decoded: list[dict[str, int]] = []
tasks: set[asyncio.Task] = set()

# OpenSSL's names for the SRTP profiles where they differ from the IANA registry's.
IANA = {"SRTP_AES128_CM_SHA1_80": "SRTP_AES128_CM_HMAC_SHA1_80",
        "SRTP_AES128_CM_SHA1_32": "SRTP_AES128_CM_HMAC_SHA1_32"}


async def consume(track, counts: dict[str, int]) -> None:
    """Reads a received track to its end; each frame it yields has been decoded."""
    try:
        while True:
            await track.recv()
            counts[track.kind] += 1
    except MediaStreamError:
        pass


async def stats(pc: RTCPeerConnection, counts: dict[str, int]) -> dict:
    out = {"connectionState": pc.connectionState, "framesDecoded": counts["video"],
           "audioFramesDecoded": counts["audio"], "packetsReceived": 0, "packetsLost": 0,
           "packetsSent": 0}
    transceivers = pc.getTransceivers()
    if transceivers:
        dtls = transceivers[0].receiver.transport
        out["dtlsState"] = dtls.state
        out["dtlsRole"] = dtls._role  # aiortc has no public accessor for these two
        ssl = dtls._ssl
        if dtls.state == "connected" and ssl is not None:
            name = ssl.get_selected_srtp_profile().decode()
            out["srtpCipher"] = IANA.get(name, name)
    for s in (await pc.getStats()).values():
        if s.type == "inbound-rtp":
            out["packetsReceived"] += s.packetsReceived
            out["packetsLost"] += s.packetsLost
        elif s.type == "outbound-rtp":
            out["packetsSent"] += s.packetsSent
    return out


async def handle(req: dict) -> dict:
    op = req.get("op")
    if op == "publish_offer":
        pc = RTCPeerConnection()
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        pcs.append(pc)
        decoded.append({"audio": 0, "video": 0})
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
        counts = {"audio": 0, "video": 0}

        @pc.on("track")
        def on_track(track) -> None:
            task = asyncio.ensure_future(consume(track, counts))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await pc.setRemoteDescription(RTCSessionDescription(sdp=req["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        pcs.append(pc)
        decoded.append(counts)
        tracks = [{"mid": t.mid, "kind": t.kind} for t in pc.getTransceivers()]
        return {"id": len(pcs) - 1, "sdp": pc.localDescription.sdp, "tracks": tracks}
    if op == "stats":
        return await stats(pcs[req["id"]], decoded[req["id"]])
    raise ValueError(f"unknown op {op}")


async def main() -> None:
    if "--loopback" in sys.argv[1:]:
        gather = aioice.ice.get_host_addresses

        def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            found = gather(use_ipv4, use_ipv6)
            return found + ["127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found

        aioice.ice.get_host_addresses = with_loopback
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
