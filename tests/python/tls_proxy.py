"""A TLS-terminating reverse proxy for the forward tests: https on a loopback port in front of
a plain-http Sightline, with a CA and a server certificate (for 127.0.0.1 and localhost) made at
start.

    tls_proxy.py --upstream http://127.0.0.1:PORT --dir DIR

Writes DIR/ca.pem (the CA to trust), DIR/other-ca.pem (a CA that signed nothing here),
DIR/server.pem and DIR/server.key, then prints one JSON line {"port": N, "ca": ..., "other_ca":
...} once it accepts connections. Requests go upstream as they came: method, path, every header
but the hop-by-hop ones, the body byte for byte; answers come back the same way. Each request
and each failed handshake is logged on stderr. It exits when its standard input closes (the
test that started it is gone).
"""

import argparse
import datetime
import http.client
import http.server
import ipaddress
import json
import os
import ssl
import sys
import threading
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Headers that describe one connection, not the message (RFC 9110 section 7.6.1).
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
}


def name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(common_name))
        .issuer_name(name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(ca_key, ca_cert, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("sightline test upstream"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_pem(path, data):
    with open(path, "wb") as f:
        f.write(data)


def make_certificates(directory):
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, ca_cert = make_ca("sightline test CA", now)
    _, other_cert = make_ca("sightline unrelated test CA", now)
    key, cert = make_server_cert(ca_key, ca_cert, now)
    paths = {
        "ca": os.path.join(directory, "ca.pem"),
        "other_ca": os.path.join(directory, "other-ca.pem"),
        "cert": os.path.join(directory, "server.pem"),
        "key": os.path.join(directory, "server.key"),
    }
    write_pem(paths["ca"], ca_cert.public_bytes(serialization.Encoding.PEM))
    write_pem(paths["other_ca"], other_cert.public_bytes(serialization.Encoding.PEM))
    write_pem(paths["cert"], cert.public_bytes(serialization.Encoding.PEM))
    write_pem(
        paths["key"],
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return paths


def log(message):
    print(f"tls_proxy: {message}", file=sys.stderr, flush=True)


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream = None  # (host, port), set before serving

    def relay(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {
            k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP
        }
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            # skip_host/skip_accept_encoding: the client's own Host and Accept-Encoding go on
            # among `headers`, unchanged.
            conn.putrequest(
                self.command, self.path, skip_host=True, skip_accept_encoding=True
            )
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        log(f"{self.command} {self.path} {len(body or b'')} bytes -> {resp.status}")
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = relay

    def log_message(self, format, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that refused the certificate ends the handshake here.
        log(f"connection failed: {sys.exc_info()[1]!r}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()

    target = urllib.parse.urlsplit(args.upstream)
    Proxy.upstream = (target.hostname, target.port)
    paths = make_certificates(args.dir)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(paths["cert"], paths["key"])
    server = Server(("127.0.0.1", 0), Proxy)
    # The handshake happens on the first read, in the request's thread, so a client that
    # stalls or refuses the certificate holds up no one else.
    server.socket = context.wrap_socket(
        server.socket, server_side=True, do_handshake_on_connect=False
    )

    def exit_when_stdin_closes():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    print(
        json.dumps(
            {
                "port": server.server_address[1],
                "ca": paths["ca"],
                "other_ca": paths["other_ca"],
            }
        ),
        flush=True,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
