"""Make a pvs@2 signature with jwcrypto, an independent JWS implementation,
for the tests that check our verifier against signatures we did not make.

    jws_sign.py ALG CURVE PAYLOAD_FILE HEADER.json OUT_SIG.json OUT_KEY.pem

A fresh EC key on CURVE (P-256, P-384, P-521) signs PAYLOAD_FILE (the
detached payload: canonical JSON of the covered state keys) with the
protected header HEADER.json plus alg and the public key as a JWK. Writes
the signature document ({"#spec", "protected", "signature"}) and the
public key in PEM."""
import json
import sys

from jwcrypto import jwk, jws

alg, curve, payload_file, header_file, out_sig, out_key = sys.argv[1:7]
key = jwk.JWK.generate(kty="EC", crv=curve)
header = json.load(open(header_file))
header["alg"] = alg
header["jwk"] = json.loads(key.export_public())
token = jws.JWS(open(payload_file, "rb").read())
token.add_signature(key, alg=alg, protected=json.dumps(header))
full = json.loads(token.serialize())
doc = {"#spec": "pvs@2", "protected": full["protected"], "signature": full["signature"]}
json.dump(doc, open(out_sig, "w"))
open(out_key, "wb").write(key.export_to_pem())
print(f"signed: alg={alg} crv={curve}")
