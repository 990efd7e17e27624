"""Privacy rights: erasure, access export, suppression, retention, request register and audit.

``rights.PrivacyRights`` is the service the API, the CLI and ``serve`` use; the other modules
are its parts, one job each:

- ``subjects``: phone numbers, calls and sessions as subjects, and their keyed hashes;
- ``secret``: the server secret that keys those hashes (a private file, made on first use);
- ``suppression``: the in-memory list the call path asks, per INVITE, how to treat a caller;
- ``erasure``: what a subject covers, and its removal into anonymous counts;
- ``export``: everything about a subject as one streamed zip;
- ``rectification``: corrections of caller numbers and form fields;
- ``retention``: the purge of what is past its period, daily in ``serve``;
- ``register``: requests, their due dates and outcomes;
- ``audit``: who removed, exported, corrected or keyed what, and how much;
- ``archive``: what privacy needs of the recordings service.
"""
