"""Prints what aiortc says in SDP, for relay/src/sdp/testdata/.

    python aiortc_capture.py publish-offer    a sendonly audio + video offer
"""

import asyncio
import sys

from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack


async def publish_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


if __name__ == "__main__":
    if sys.argv[1:] != ["publish-offer"]:
        sys.exit("usage: aiortc_capture.py publish-offer")
    sys.stdout.write(asyncio.run(publish_offer()))
