"""Writes the carrier-style INVITEs (.dat, exact bytes) that tests/sip/test_carriers.py reads.

Each message carries quirks seen from real trunks and SBCs; the comments say which.
"""

from __future__ import annotations

from pathlib import Path

SDP = (
    "v=0\r\n"
    "o=- 3912 3912 IN IP4 203.0.113.50\r\n"
    "s=SBC\r\n"
    "c=IN IP4 203.0.113.50\r\n"
    "t=0 0\r\n"
    "m=audio 16384 RTP/AVP 8 0 18 101\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:18 G729/8000\r\n"
    "a=fmtp:18 annexb=no\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-16\r\n"
    "a=rtcp:16385\r\n"
    "a=ptime:20\r\n"
    "a=sendrecv\r\n"
    "m=video 0 RTP/AVP 96\r\n"
    "a=rtpmap:96 H264/90000\r\n"
)

MESSAGES = {
    # Compact header names in lower case, no space after colons, user=phone, a national number
    # with a leading 00 international prefix in the Request-URI.
    "compact": (
        "INVITE sip:00441515550001@198.51.100.1;user=phone SIP/2.0\r\n"
        "v:SIP/2.0/UDP 203.0.113.50:5060;branch=z9hG4bK-sbc-1;rport\r\n"
        "f:<sip:+447700900123@203.0.113.50;user=phone>;tag=sbc1\r\n"
        "t:<sip:00441515550001@198.51.100.1;user=phone>\r\n"
        "i:c0mpact-1@203.0.113.50\r\n"
        "CSeq:1 INVITE\r\n"
        "m:<sip:+447700900123@203.0.113.50:5060>\r\n"
        "Max-Forwards:69\r\n"
        "c:application/sdp\r\n"
        f"l:{len(SDP)}\r\n\r\n{SDP}"
    ),
    # A tel URI with phone-context, P-Asserted-Identity, Diversion, Privacy and a folded header.
    "teluri": (
        "INVITE tel:+44-151-555-0001;phone-context=+44 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP [2001:db8::50]:5060;branch=z9hG4bK-sbc-2\r\n"
        "Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK-core-2;received=192.0.2.77\r\n"
        "Max-Forwards: 68\r\n"
        'From: "Anonymous" <sip:anonymous@anonymous.invalid>;tag=sbc2\r\n'
        "To: <tel:+441515550001>\r\n"
        "Call-ID: t3l-2@2001:db8::50\r\n"
        "CSeq: 4711 INVITE\r\n"
        "Contact: <sip:sbc@[2001:db8::50]:5060;transport=tcp>\r\n"
        "P-Asserted-Identity: <sip:+447700900123@carrier.example;user=phone>,\r\n"
        "  <tel:+447700900123>\r\n"
        "Privacy: id\r\n"
        "Diversion: <sip:+441515550099@carrier.example>;reason=unconditional;counter=1\r\n"
        "Supported: timer, 100rel\r\n"
        "Session-Expires: 1800;refresher=uac\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(SDP)}\r\n\r\n{SDP}"
    ),
    # Bare LF line endings from a misbehaving SBC, trailing spaces after values, and a Contact
    # with +sip.instance in quotes and angle brackets.
    "barelf": (
        "INVITE sip:+441515550001@198.51.100.1 SIP/2.0\n"
        "Via: SIP/2.0/UDP 203.0.113.51;branch=z9hG4bK-sbc-3  \n"
        "From: <sip:+447700900123@203.0.113.51>;tag=sbc3\n"
        "To: <sip:+441515550001@198.51.100.1>  \n"
        "Call-ID: lf-3\n"
        "CSeq: 2 INVITE\n"
        'Contact: <sip:gw@203.0.113.51>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-'
        '000A95A0E128>";expires=3600\n'
        "Max-Forwards: 70\n"
        "Content-Length: 0\n\n"
    ),
}


def main() -> None:
    here = Path(__file__).parent
    for name, text in MESSAGES.items():
        (here / f"{name}.dat").write_bytes(text.encode())


if __name__ == "__main__":
    main()
