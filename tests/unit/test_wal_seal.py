"""The WAL's key lives outside the database: from the environment, a named file, or a file made on first use."""

import stat

import pytest

from resources.wal_seal import KEY_ENV, KEY_FILE_ENV, Seal, SealError, current_seal, signature_valid


def test_the_default_key_file_is_made_once_private_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("DATA_MASH_HOME", str(tmp_path))
    first = current_seal()
    path = tmp_path / "secrets" / "wal.key"
    assert first.source == str(path) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert current_seal().key_id == first.key_id  # the same key next time
    assert len(path.read_text().strip()) == 64


def test_a_key_from_the_environment_or_a_named_file(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "x" * 40)
    from_env = current_seal()
    monkeypatch.delenv(KEY_ENV)
    (tmp_path / "k").write_text("x" * 40 + "\n")
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "k"))
    assert current_seal().key_id == from_env.key_id and from_env.source == f"${KEY_ENV}"
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "missing"))
    with pytest.raises(SealError, match="does not exist"):
        current_seal()
    monkeypatch.setenv(KEY_ENV, "short")
    with pytest.raises(SealError, match="at least 32"):
        current_seal()


def test_macs_and_signatures_depend_on_the_key():
    a, b = Seal(b"a" * 32, "a"), Seal(b"b" * 32, "b")
    fields = {"seq": 1, "body": {"n": 1}}
    assert a.mac(fields) != b.mac(fields) and a.mac(fields) == Seal(b"a" * 32, "again").mac(fields)
    assert a.mac(fields) != a.mac({**fields, "seq": 2})
    signature = a.sign({"heads": []})
    assert signature_valid({"heads": []}, signature, a.public_key)
    assert not signature_valid({"heads": [1]}, signature, a.public_key)
    assert not signature_valid({"heads": []}, signature, b.public_key)
