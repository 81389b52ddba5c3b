"""A registry token service for tests (Docker Registry v2 token authentication):
GET /token?service=S&scope=repository:NAME:ACTIONS with Basic credentials
USER:PASSWORD answers {"token": JWT}; the JWT is ES256-signed with KEY, carries
CERT as x5c (the registry trusts CERT through its rootcertbundle) and grants
what the scope asks. Wrong or missing credentials: 401.

    token_server.py PORT ISSUER KEY.pem CERT.pem USER PASSWORD
Prints "listening" once it accepts connections."""
import base64
import json
import ssl
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

from jwcrypto import jwk, jwt

port, issuer, key_file, cert_file, user, password = sys.argv[1:7]
key = jwk.JWK.from_pem(open(key_file, "rb").read())
der = ssl.PEM_cert_to_DER_cert(open(cert_file).read())
x5c = [base64.b64encode(der).decode()]
expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        url = urlparse(self.path)
        if url.path != "/token" or self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.end_headers()
            return
        q = parse_qs(url.query)
        access = []
        for scope in q.get("scope", []):
            kind, name, actions = scope.split(":", 2)
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        token = jwt.JWT(
            header={"alg": "ES256", "typ": "JWT", "x5c": x5c},
            claims={
                "iss": issuer, "sub": user, "aud": q.get("service", [""])[0],
                "exp": now + 300, "nbf": now - 10, "iat": now, "jti": str(uuid.uuid4()),
                "access": access,
            },
        )
        token.make_signed_token(key)
        body = json.dumps({"token": token.serialize(), "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


server = HTTPServer(("127.0.0.1", int(port)), Handler)
print("listening", flush=True)
server.serve_forever()
