"""Debian's clickhouse-server 18.16 with a TLS native port and a password user, for tests.

`ClickHouseServer` writes a config without TLS; this adds, before the first start, a
`tcp_port_secure` and an `<openSSL><server>` section with the test CA's server
certificate, and a user with a SHA-256 password in `users.d/` (merged into users.xml).
The plaintext port stays open for set-up; tests connect through the secure one.
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

from tests.services.clickhouse_server import ClickHouseServer, free_port
from tests.services.tls import Pki


class SecureClickHouseServer(ClickHouseServer):
    def __init__(self, pki: Pki, user: str, password: str) -> None:
        super().__init__()
        self.secure_port = free_port()
        self.user = user
        self.password = password
        config = ET.parse(self.config_path)
        root = config.getroot()
        ET.SubElement(root, "tcp_port_secure").text = str(self.secure_port)
        server = ET.SubElement(ET.SubElement(root, "openSSL"), "server")
        for tag, text in (
            ("certificateFile", str(pki.server_cert)),
            ("privateKeyFile", str(pki.server_key)),
            ("verificationMode", "none"),
            ("loadDefaultCAFile", "false"),
            ("cacheSessions", "true"),
            ("disableProtocols", "sslv2,sslv3,tlsv1,tlsv1_1"),
            ("preferServerCiphers", "true"),
        ):
            ET.SubElement(server, tag).text = text
        config.write(self.config_path, encoding="utf-8", xml_declaration=True)
        users_d = self.base / "users.d"
        users_d.mkdir(exist_ok=True)
        digest = hashlib.sha256(password.encode()).hexdigest()
        (users_d / "kudos_secure.xml").write_text(
            f"<yandex><users><{user}>"
            f"<password_sha256_hex>{digest}</password_sha256_hex>"
            "<profile>default</profile><quota>default</quota>"
            "<networks><ip>::/0</ip></networks>"
            f"</{user}></users></yandex>\n"
        )

    def secure_url(self, ca_file: str, *, password: str | None = None) -> str:
        """clickhouse:// URL over the TLS port, verifying with `ca_file`."""
        from urllib.parse import quote

        secret = quote(self.password if password is None else password, safe="")
        return (
            f"clickhouse://{self.user}:{secret}@localhost:{self.secure_port}/kudos"
            f"?secure=true&ca_certs={quote(ca_file)}"
        )
