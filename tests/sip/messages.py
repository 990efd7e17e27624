"""Messages the SIP tests share, written as carriers send them."""

from __future__ import annotations

from callrouter.sip.message import Request, Response, parse_message

SDP = (
    b"v=0\r\n"
    b"o=carrier 1736 1736 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/AVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)


def invite(branch: str = "z9hG4bK-carrier-1", *, cseq: int = 1, from_tag: str = "ft1") -> Request:
    data = (
        "INVITE sip:+441515550001@198.51.100.1:5060 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch};rport\r\n"
        "Max-Forwards: 69\r\n"
        f'From: "07700 900123" <sip:+447700900123@192.0.2.10>;tag={from_tag}\r\n'
        "To: <sip:+441515550001@198.51.100.1>\r\n"
        "Call-ID: 8f1e2d@192.0.2.10\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        "Contact: <sip:+447700900123@192.0.2.10:5060>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n"
    ).encode() + SDP
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def options(branch: str = "z9hG4bK-ping-1") -> Request:
    data = (
        "OPTIONS sip:198.51.100.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:ping@192.0.2.10>;tag=p1\r\n"
        "To: <sip:198.51.100.1>\r\n"
        "Call-ID: ping-1@192.0.2.10\r\n"
        "CSeq: 7 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def answer(request: Request, status: int, to_tag: str = "tt1") -> Response:
    return request.response(status, to_tag=to_tag)
