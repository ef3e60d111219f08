"""API tokens: `dalc tokens create|list|revoke` on real PostgreSQL, and what the store keeps of them."""
from __future__ import annotations

import subprocess
import sys

import pytest

from app.store import TokenNameTaken, tokens
from app.store.database import db
from support import ROOT, clean_tables, dalc_env


@pytest.fixture
def dalc(app, pg_url):
    """Run the `dalc` command on this run's database; return (exit code, stdout, stderr)."""
    def run(*args):
        done = subprocess.run([sys.executable, "-m", "app", *args], env=dalc_env(DALC_DATABASE_URL=pg_url),
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout, done.stderr

    yield run
    clean_tables()


def test_create_prints_the_token_once_and_stores_only_its_hash(dalc):
    code, out, err = dalc("tokens", "create", "ci-bot")
    assert code == 0
    secret = out.strip()
    assert secret.startswith("dalc_") and len(secret) > 40 and "\n" not in secret
    assert "shown this once" in err and secret not in err
    with db.connection_context():
        stored = db.execute_sql("SELECT name, token_hash FROM api_token").fetchall()
        assert stored == [("ci-bot", tokens.hash_token(secret))]
        assert tokens.active_token_id(secret) is not None


def test_list_shows_names_and_dates_never_secrets(dalc):
    secret = dalc("tokens", "create", "alpha")[1].strip()
    dalc("tokens", "create", "beta")
    dalc("tokens", "revoke", "beta")
    code, out, _ = dalc("tokens", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[0] == "NAME"
    alpha, beta = lines[1].split(), lines[2].split()
    assert alpha[0] == "alpha" and alpha[-1] == "-"
    assert beta[0] == "beta" and beta[-1] != "-"
    assert secret not in out and tokens.hash_token(secret) not in out


def test_revoke_refuses_the_token_and_frees_the_name(dalc):
    secret = dalc("tokens", "create", "ops")[1].strip()
    assert dalc("tokens", "revoke", "ops")[0] == 0
    with db.connection_context():
        assert tokens.active_token_id(secret) is None
    assert dalc("tokens", "revoke", "ops")[0] == 1
    assert dalc("tokens", "create", "ops")[0] == 0


def test_a_name_in_use_or_malformed_is_refused(dalc):
    assert dalc("tokens", "create", "dup")[0] == 0
    code, out, err = dalc("tokens", "create", "dup")
    assert (code, out) == (1, "") and "already called 'dup'" in err
    code, out, err = dalc("tokens", "create", "no spaces")
    assert (code, out) == (2, "") and "token name" in err


def test_the_store_refuses_two_active_tokens_of_one_name(app):
    with db.connection_context():
        tokens.create_token("twice")
        with pytest.raises(TokenNameTaken):
            tokens.create_token("twice")
        assert [t.name for t in tokens.list_tokens()] == ["twice"]
    clean_tables()


def test_every_token_is_different(app):
    with db.connection_context():
        secrets = {tokens.create_token(f"t{i}")[1] for i in range(20)}
    assert len(secrets) == 20
    clean_tables()
