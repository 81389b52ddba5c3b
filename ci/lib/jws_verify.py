"""Verify a pvs@2 signature document with jwcrypto, an independent JWS
implementation: the detached payload (canonical JSON of the covered keys) is
put back into the JWS and checked against the public key.

    jws_verify.py SIGNATURE.json PAYLOAD_FILE PUBLIC_KEY.pem
Exit 0 when it verifies, 1 when not."""
import base64
import json
import sys

from jwcrypto import jwk, jws

doc = json.load(open(sys.argv[1]))
payload = open(sys.argv[2], "rb").read()
key = jwk.JWK.from_pem(open(sys.argv[3], "rb").read())
full = {
    "protected": doc["protected"],
    "signature": doc["signature"],
    "payload": base64.urlsafe_b64encode(payload).rstrip(b"=").decode(),
}
token = jws.JWS()
token.deserialize(json.dumps(full))
try:
    token.verify(key)
except jws.InvalidJWSSignature as e:
    print(f"does not verify: {e}")
    sys.exit(1)
header = json.loads(base64.urlsafe_b64decode(doc["protected"] + "=="))
print(f"verified: alg={header['alg']} typ={header.get('typ')} include={header['pvs']['include']}")
