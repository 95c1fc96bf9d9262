"""C2PA manifests on generated images: a local signing chain, signing, and verification.

C2PA (https://c2pa.org) binds a signed claim to the exact bytes of a file: "this PNG was created
by a trained model (sfsr, model M version V, request R)", signed with an X.509 key. A reader
recomputes the hash, checks the signature and asks whether the signing certificate chains to an
anchor it trusts. It proves provenance cryptographically, but lives in the file's metadata: any
re-encode, resize or screenshot drops it (the invisible watermark, sfsr/watermark/, survives
those; README, "Labelling outputs").

The c2pa library refuses a self-signed leaf, so `create_chain` makes a small local CA (ES256,
P-256) and a leaf signed by it (digitalSignature, extended key usage emailProtection, one of the
EKUs C2PA validators accept for claim signing). A folder holds:

    chain.pem   the leaf, then its issuers (what the signer embeds in every manifest)
    signer.key  the leaf's private key (PKCS#8 PEM, mode 0600)
    ca.pem      the trust anchor(s) readers check the chain against

The CA's own private key is discarded after it signs the leaf, so no other certificate can ever be
issued under it; when the leaf expires `ensure_chain` makes a new CA and leaf. A local CA is
trusted by no one but us: outside readers see a valid signature from an untrusted signer. For
outputs others should trust, put a chain from a CA on the C2PA trust list in such a folder and
point the ingress at it (IngressSettings.c2pa_cert_dir).

No timestamp authority is used (no network), so a signature is only valid while the leaf is.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CHAIN_FILE = "chain.pem"
KEY_FILE = "signer.key"
ANCHORS_FILE = "ca.pem"
LEAF_DAYS = 365
GENERATOR = "sfsr"
CREATED_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_FORMATS = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"RIFF": "image/webp"}


def default_cert_dir() -> Path:
    """Where `sfsr cluster up` and an ingress without c2pa_cert_dir keep the local chain:
    $SFSR_HOME/local/c2pa (default ~/.sfsr/local/c2pa), i.e. cluster.PlatformConfig().home / "c2pa"."""
    return Path(os.environ.get("SFSR_HOME", Path.home() / ".sfsr")) / "local" / "c2pa"


@dataclass(frozen=True)
class Credentials:
    """A signing chain as PEM bytes, read from a folder (see the module docstring)."""

    chain_pem: bytes  # leaf first
    key_pem: bytes
    anchors_pem: bytes
    folder: Path


@dataclass(frozen=True)
class Claim:
    """What a manifest says about one output."""

    model: str
    model_version: str
    request_id: str
    generator_version: str = "0.1.0"


@dataclass(frozen=True)
class C2paReport:
    """What `read_c2pa` found in a file."""

    present: bool  # a manifest store was found
    valid: bool  # signature and content hashes check out (the bytes are what was signed)
    trusted: bool  # ... and the signer chains to one of the given anchors
    state: str  # the library's validation_state (Invalid / Valid / Trusted), or "absent"
    signer: str = ""  # the signing certificate's common name
    issuer: str = ""  # its organisation
    generator: str = ""  # claim generator name
    digital_source_type: str = ""  # of the c2pa.created action
    request_id: str = ""  # from the c2pa.created action's parameters
    failures: tuple[str, ...] = ()  # validation failure codes


def _name(cn: str):  # noqa: ANN202 - cryptography's Name, imported lazily
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sfsr local")]
    )


def _usage(*, sign: bool) -> object:
    from cryptography import x509

    flags = dict.fromkeys(
        (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "encipher_only",
            "decipher_only",
        ),
        False,
    )
    return x509.KeyUsage(digital_signature=sign, key_cert_sign=not sign, crl_sign=not sign, **flags)


def create_chain(folder: Path, *, days: int = LEAF_DAYS) -> Credentials:
    """Write a fresh local CA + ES256 leaf into `folder` (replacing what is there) and return it.

    Files are written to a temporary folder beside it and renamed into place, so concurrent
    replicas never read half a chain."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(minutes=5)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("sfsr local C2PA CA"))
        .issuer_name(_name("sfsr local C2PA CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=days + 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_usage(sign=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("sfsr output signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(sign=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    files = {
        CHAIN_FILE: leaf.public_bytes(pem) + ca.public_bytes(pem),
        KEY_FILE: key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ANCHORS_FILE: ca.public_bytes(pem),
    }
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    (tmp / KEY_FILE).chmod(0o600)
    folder.mkdir(exist_ok=True)
    for name in files:
        os.replace(tmp / name, folder / name)  # atomic per file; the key last but one, chain first
    tmp.rmdir()
    return load_credentials(folder)


def load_credentials(folder: Path) -> Credentials:
    """Read a chain folder; errors name the missing file and how to make one."""
    folder = Path(folder)
    missing = [n for n in (CHAIN_FILE, KEY_FILE, ANCHORS_FILE) if not (folder / n).is_file()]
    if missing:
        raise ValueError(
            f"C2PA chain folder {folder}: missing {', '.join(missing)}; put your signing chain there "
            f"({CHAIN_FILE}: leaf then issuers, {KEY_FILE}: its PKCS#8 key, {ANCHORS_FILE}: the root), "
            "or run `sfsr cluster up` / leave c2pa_cert_dir unset to use a local chain"
        )
    return _load(str(folder), (folder / CHAIN_FILE).stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _load(folder: str, _mtime_ns: int) -> Credentials:  # cached per folder and chain version
    f = Path(folder)
    return Credentials((f / CHAIN_FILE).read_bytes(), (f / KEY_FILE).read_bytes(), (f / ANCHORS_FILE).read_bytes(), f)


def leaf_expires(creds: Credentials) -> datetime.datetime:
    from cryptography import x509

    return x509.load_pem_x509_certificates(creds.chain_pem)[0].not_valid_after_utc


def ensure_chain(folder: Path | None = None) -> Credentials:
    """The chain in `folder` (default_cert_dir() if None); a new local one when there is none or
    its leaf expires within a day."""
    folder = Path(folder) if folder is not None else default_cert_dir()
    if all((folder / n).is_file() for n in (CHAIN_FILE, KEY_FILE, ANCHORS_FILE)):
        creds = load_credentials(folder)
        if leaf_expires(creds) > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1):
            return creds
    return create_chain(folder)


def manifest(claim: Claim, title: str = "output.png") -> dict:
    """The manifest definition: claim generator sfsr, one c2pa.created action by a trained model."""
    return {
        "claim_generator_info": [{"name": GENERATOR, "version": claim.generator_version}],
        "title": title,
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": CREATED_SOURCE_TYPE,
                            "softwareAgent": {"name": f"sfsr {claim.model}", "version": claim.model_version},
                            "parameters": {
                                "model": claim.model,
                                "model_version": claim.model_version,
                                "request_id": claim.request_id,
                            },
                        }
                    ]
                },
            }
        ],
    }


def _context(anchors_pem: bytes | None):  # noqa: ANN202 - c2pa.Context, imported lazily
    import c2pa

    settings: dict = {"version": 1, "builder": {"thumbnail": {"enabled": False}}}
    if anchors_pem:
        settings["trust"] = {"trust_anchors": anchors_pem.decode()}
        settings["verify"] = {"verify_trust": True}
    return c2pa.Context.from_dict(settings)


def sign_png(png: bytes, claim: Claim, creds: Credentials) -> bytes:
    """PNG bytes -> the same PNG with a signed C2PA manifest embedded (a caBX chunk)."""
    import c2pa

    if not png.startswith(b"\x89PNG"):
        raise ValueError("sign_png: the input is not PNG bytes; encode the image as PNG first")
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, creds.chain_pem, creds.key_pem, None))
    out = io.BytesIO()
    with _context(None) as ctx, c2pa.Builder(manifest(claim), context=ctx) as builder:
        builder.sign(signer, "image/png", io.BytesIO(png), out)
    return out.getvalue()


def read_c2pa(data: bytes, anchors_pem: bytes | None = None) -> C2paReport:
    """Read and verify the manifest of PNG, JPEG or WebP bytes; trusted only against `anchors_pem`."""
    import c2pa

    mime = next((m for magic, m in _FORMATS.items() if data.startswith(magic)), None)
    if mime is None:
        return C2paReport(False, False, False, "absent")
    try:
        with _context(anchors_pem) as ctx, c2pa.Reader(mime, io.BytesIO(data), context=ctx) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError:  # no manifest, or one too broken to parse
        return C2paReport(False, False, False, "absent")
    active = store.get("manifests", {}).get(store.get("active_manifest", ""), {})
    state = str(store.get("validation_state", "Invalid"))
    results = store.get("validation_results", {}).get("activeManifest", {})
    failures = tuple(str(f.get("code", "")) for f in results.get("failure", []))
    sig = active.get("signature_info", {})
    created = [
        a
        for assertion in active.get("assertions", [])
        if assertion.get("label", "").startswith("c2pa.actions")
        for a in assertion.get("data", {}).get("actions", [])
        if a.get("action") == "c2pa.created"
    ]
    gen = active.get("claim_generator_info", [{}])
    untrusted_only = all(code == "signingCredential.untrusted" for code in failures)
    return C2paReport(
        present=True,
        valid=state in ("Valid", "Trusted") or (bool(failures) and untrusted_only),
        trusted=state == "Trusted",
        state=state,
        signer=str(sig.get("common_name", "")),
        issuer=str(sig.get("issuer", "")),
        generator=str(gen[0].get("name", "")) if gen else "",
        digital_source_type=str(created[0].get("digitalSourceType", "")) if created else "",
        request_id=str(created[0].get("parameters", {}).get("request_id", "")) if created else "",
        failures=failures,
    )
