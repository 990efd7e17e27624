"""contrib/nginx/callrouter.conf (the README's reverse proxy) in front of a real serve: the
API answers over TLS through nginx, plain HTTP is redirected to HTTPS, and with nginx trusted
(``[http] trusted_proxies``) each client behind it is held to its own per-address limits."""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

from tests.e2e.serve import ServeProcess
from tests.e2e.sipp import free_port

CONF = Path(__file__).parents[2] / "contrib" / "nginx" / "callrouter.conf"


def substituted(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert old in text, f"{old!r} is no longer in {CONF}"
        text = text.replace(old, new)
    return text


def distinct_free_ports(count: int) -> list[int]:
    """Free ports, all different (each free_port() call may hand back the last one)."""
    ports: set[int] = set()
    for _ in range(count * 20):
        ports.add(free_port())
        if len(ports) == count:
            return sorted(ports)
    raise AssertionError(f"no {count} distinct free ports")


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=api.example.com",
            "-addext",
            "subjectAltName=DNS:api.example.com,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_nginx_snippet_serves_the_api_over_tls_and_redirects_plain_http(workdir: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    api_port, tls_port, plain_port, sip_port = distinct_free_ports(4)
    cert, key = self_signed(workdir)
    site = substituted(
        CONF.read_text(),
        {
            "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
            "listen 80;": f"listen 127.0.0.1:{plain_port};",
            "127.0.0.1:8080": f"127.0.0.1:{api_port}",
            "/etc/letsencrypt/live/api.example.com/fullchain.pem": str(cert),
            "/etc/letsencrypt/live/api.example.com/privkey.pem": str(key),
        },
    )
    (workdir / "nginx.conf").write_text(
        f"pid {workdir}/nginx.pid;\nerror_log {workdir}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log off;\nclient_body_temp_path {workdir}/body;\n"
        f"proxy_temp_path {workdir}/proxy;\n{site}\n}}\n"
    )
    checked = subprocess.run(
        [nginx, "-t", "-q", "-p", str(workdir), "-c", str(workdir / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr

    server = ServeProcess(
        workdir / "data",
        "--http-port",
        str(api_port),
        "--sip-port",
        str(sip_port),
        "--media-workers",
        "0",
        "--http-trusted-proxies",
        "127.0.0.1",
        "--http-auth-failure-burst",
        "3",
    )
    proxy = subprocess.Popen(
        [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        server.wait_ready()
        context = ssl.create_default_context(cafile=str(cert))
        deadline = time.monotonic() + 30
        while True:
            try:
                connection = http.client.HTTPSConnection(
                    "127.0.0.1", tls_port, context=context, timeout=10
                )
                connection.request("GET", "/v1/health", headers={"Host": "api.example.com"})
                break
            except ConnectionRefusedError:
                assert proxy.poll() is None, (workdir / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx never listened"
                time.sleep(0.05)
        response = connection.getresponse()
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"
        assert connection.sock is not None
        assert connection.sock.version() in ("TLSv1.2", "TLSv1.3")
        connection.close()

        plain = http.client.HTTPConnection("127.0.0.1", plain_port, timeout=10)
        plain.request("GET", "/v1/health", headers={"Host": "api.example.com"})
        redirect = plain.getresponse()
        assert redirect.status == 301
        assert redirect.getheader("Location") == "https://api.example.com/v1/health"
        plain.close()

        def bad_key(client: str, port: int = tls_port, forged: str | None = None) -> int:
            """A request with a wrong key from loopback address ``client``: its status."""
            headers = {"Host": "api.example.com", "Authorization": "Bearer crk_wrong"}
            if forged is not None:
                headers["X-Forwarded-For"] = forged
            if port == tls_port:
                connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                    "127.0.0.1", port, context=context, timeout=10, source_address=(client, 0)
                )
            else:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", port, timeout=10, source_address=(client, 0)
                )
            connection.request("GET", "/v1/numbers", headers=headers)
            status = connection.getresponse().status
            connection.close()
            return status

        # Client A, through nginx, spends its failed-authentication burst (3) and is slowed.
        # A forged X-Forwarded-For of its own is never read: nginx appends A's address last.
        statuses = [bad_key("127.0.0.5", forged="198.51.100.9") for _ in range(4)]
        assert statuses == [401, 401, 401, 429]
        # Client B, through the same nginx, is a different address: its own budget. Without
        # trusted_proxies both are 127.0.0.1 to serve, and B would be refused for A's tries.
        assert bad_key("127.0.0.6") == 401
        # Straight to serve, not through a trusted proxy, the header is ignored: A is A.
        assert bad_key("127.0.0.5", port=api_port, forged="198.51.100.10") == 429
    finally:
        proxy.terminate()
        proxy.wait(timeout=30)
        assert server.stop() == 0
