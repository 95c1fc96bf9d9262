"""C2PA manifests (sfsr/c2pa_sign.py): a local chain, signing, reading back, tampering."""

from __future__ import annotations

import datetime
import io
import json

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from sfsr import c2pa_sign
from sfsr import watermark as wm

CLAIM = c2pa_sign.Claim("cpu-demo", "0.1.0", "req-42")


@pytest.fixture(scope="module")
def creds(tmp_path_factory) -> c2pa_sign.Credentials:
    return c2pa_sign.create_chain(tmp_path_factory.mktemp("c2pa") / "chain")


def _png() -> bytes:
    rng = np.random.default_rng(0)
    return wm.encode_png(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), {"Description": "x"})


@pytest.fixture(scope="module")
def png() -> bytes:
    return _png()


def test_chain_is_a_ca_and_an_es256_leaf_it_signed(creds) -> None:
    leaf, ca = x509.load_pem_x509_certificates(creds.chain_pem)
    assert x509.load_pem_x509_certificates(creds.anchors_pem)[0] == ca
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    leaf.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert x509.oid.ExtendedKeyUsageOID.EMAIL_PROTECTION in eku
    assert (creds.folder / c2pa_sign.KEY_FILE).stat().st_mode & 0o077 == 0  # private key not readable by others


def test_signed_png_reads_back_valid_and_trusted(creds, png) -> None:
    signed = c2pa_sign.sign_png(png, CLAIM, creds)
    r = c2pa_sign.read_c2pa(signed, creds.anchors_pem)
    assert r.present and r.valid and r.trusted and r.state == "Trusted" and r.failures == ()
    assert r.generator == "sfsr" and r.signer == "sfsr output signer"
    assert r.digital_source_type.endswith("/trainedAlgorithmicMedia")
    assert r.request_id == "req-42"
    # the image and its text chunks are unchanged: the manifest is an extra chunk
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(signed))), np.asarray(Image.open(io.BytesIO(png))))
    assert wm.read_png_text(signed)["Description"] == "x"


def test_trust_needs_our_anchor(creds, png, tmp_path) -> None:
    signed = c2pa_sign.sign_png(png, CLAIM, creds)
    unanchored = c2pa_sign.read_c2pa(signed, None)
    assert unanchored.valid and not unanchored.trusted
    stranger = c2pa_sign.create_chain(tmp_path / "other")
    elsewhere = c2pa_sign.read_c2pa(signed, stranger.anchors_pem)
    assert elsewhere.valid and not elsewhere.trusted


def test_tampered_pixels_fail_verification(creds, png) -> None:
    signed = bytearray(c2pa_sign.sign_png(png, CLAIM, creds))
    at = signed.index(b"IDAT") + 40
    signed[at] ^= 0xFF  # one byte of the compressed pixels
    r = c2pa_sign.read_c2pa(bytes(signed), creds.anchors_pem)
    assert r.present and not r.valid and not r.trusted
    assert any("dataHash.mismatch" in code for code in r.failures), r.failures


def test_a_re_encode_drops_the_manifest(creds, png) -> None:
    signed = c2pa_sign.sign_png(png, CLAIM, creds)
    buf = io.BytesIO()
    Image.open(io.BytesIO(signed)).save(buf, format="PNG")
    assert not c2pa_sign.read_c2pa(buf.getvalue(), creds.anchors_pem).present
    assert not c2pa_sign.read_c2pa(b"not an image").present


def test_ensure_chain_keeps_a_good_chain_and_replaces_an_expiring_one(tmp_path) -> None:
    first = c2pa_sign.ensure_chain(tmp_path / "c")
    assert c2pa_sign.ensure_chain(tmp_path / "c").chain_pem == first.chain_pem
    short = c2pa_sign.create_chain(tmp_path / "c", days=0)
    renewed = c2pa_sign.ensure_chain(tmp_path / "c")
    assert renewed.chain_pem != short.chain_pem
    assert c2pa_sign.leaf_expires(renewed) > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=300)


def test_a_missing_chain_file_is_named(tmp_path) -> None:
    creds = c2pa_sign.create_chain(tmp_path / "c")
    (creds.folder / c2pa_sign.KEY_FILE).unlink()
    with pytest.raises(ValueError, match="missing signer.key.*cluster up"):
        c2pa_sign.load_credentials(creds.folder)


def test_sign_png_refuses_other_bytes(creds) -> None:
    with pytest.raises(ValueError, match="not PNG"):
        c2pa_sign.sign_png(b"\xff\xd8\xff\xe0 jpeg", CLAIM, creds)


def test_default_folder_is_the_local_platforms(monkeypatch, tmp_path) -> None:
    from sfsr import cluster

    monkeypatch.setenv("SFSR_HOME", str(tmp_path))
    assert c2pa_sign.default_cert_dir() == cluster.PlatformConfig().home / "c2pa"


def test_manifest_says_created_by_a_trained_model() -> None:
    m = c2pa_sign.manifest(CLAIM)
    (action,) = m["assertions"][0]["data"]["actions"]
    assert action["action"] == "c2pa.created" and action["parameters"]["request_id"] == "req-42"
    assert m["claim_generator_info"][0]["name"] == "sfsr"
    json.dumps(m)  # plain JSON


def test_cluster_up_creates_the_local_chain(monkeypatch, tmp_path) -> None:
    from sfsr import cluster

    monkeypatch.setattr(cluster, "start_s3", lambda cfg: 1)
    monkeypatch.setattr(cluster, "start_ray", lambda cfg: 2)
    monkeypatch.setattr(cluster, "_alive", lambda pid, marker="": False)
    cluster.up(cluster.PlatformConfig(home=tmp_path / "local"))
    creds = c2pa_sign.load_credentials(tmp_path / "local" / "c2pa")
    assert c2pa_sign.read_c2pa(c2pa_sign.sign_png(_png(), CLAIM, creds), creds.anchors_pem).trusted


def test_ingress_setting_uses_a_configured_chain_or_the_local_one(monkeypatch, tmp_path) -> None:
    from deployments.settings import IngressSettings, from_dict

    mine = c2pa_sign.create_chain(tmp_path / "mine")
    s = from_dict(IngressSettings, {"c2pa_cert_dir": str(mine.folder)}, "test")
    assert s.c2pa_credentials().chain_pem == mine.chain_pem
    with pytest.raises(ValueError, match="c2pa_cert_dir.*missing chain.pem"):
        from_dict(IngressSettings, {"c2pa_cert_dir": str(tmp_path / "nowhere")}, "test")
    monkeypatch.setenv("SFSR_HOME", str(tmp_path / "home"))
    local = IngressSettings().c2pa_credentials()  # made on first use
    assert local.folder == tmp_path / "home" / "local" / "c2pa" and local.chain_pem != mine.chain_pem
