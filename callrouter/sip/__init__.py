"""Sans-IO SIP: messages, URIs, SDP, transactions and dialogs (RFC 3261). No I/O, no clock."""
