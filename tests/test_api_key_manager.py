"""APIKeyManager: loading, rotation, cool-downs and rests per scope, redaction, no key in
repr/logs."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from amm.api_key_manager import APIKeyManager, parse_env_file
from amm.errors import ConfigurationError, InvalidRequestError

K1 = "sk-test-aaaaaaaaaaaaaaaaaaaaaaaa"
K2 = "sk-test-bbbbbbbbbbbbbbbbbbbbbbbb"
K3 = "sk-test-cccccccccccccccccccccccc"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_API_KEY_2", "OPENAI_API_KEY_3", "ANTHROPIC_API_KEY",
                 "GOOGLE_API_KEY", "GEMINI_API_KEY", "OLLAMA_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no developer .env leaks in


def test_round_robin_rotates_over_every_key() -> None:
    keys = APIKeyManager()
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    assert [keys.get_key("openai") for _ in range(4)] == [K1, K2, K1, K2]


def test_add_key_skips_none_and_empty_and_duplicates() -> None:
    keys = APIKeyManager()
    keys.add_key("openai", None)
    keys.add_key("openai", "")
    assert not keys.has_key("openai") and keys.get_key("openai") is None
    keys.add_key("openai", K1)
    keys.add_key("openai", K1)
    assert [keys.get_key("openai") for _ in range(2)] == [K1, K1]


def test_add_key_rejects_a_non_string_key_and_a_bad_provider() -> None:
    keys = APIKeyManager()
    with pytest.raises(InvalidRequestError, match="must be a string; got int"):
        keys.add_key("openai", 12345)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="provider"):
        keys.add_key("", K1)


def test_429_cools_a_key_down_until_the_clock_passes() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock, cooldown_s=30)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.report_failure("openai", K1, 429)
    assert [keys.get_key("openai") for _ in range(3)] == [K2, K2, K2]
    clock.now += 29.9
    assert keys.get_key("openai") == K2
    clock.now += 0.2
    assert {keys.get_key("openai") for _ in range(2)} == {K1, K2}


def test_retry_after_sets_the_cool_down_length() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock, cooldown_s=60)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.report_failure("openai", K1, 429, retry_after_s=5)
    assert keys.get_key("openai") == K2
    clock.now += 5.01
    assert keys.get_key("openai") == K1


def test_when_every_key_cools_the_one_recovering_first_is_used() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.report_failure("openai", K1, 429, retry_after_s=50)
    keys.report_failure("openai", K2, 429, retry_after_s=10)
    assert keys.get_key("openai") == K2


def test_a_403_rests_the_key_for_that_model_only_and_for_five_minutes() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", K1)
    keys.report_failure("openai", K1, 403, model_id="locked")
    assert keys.get_key("openai", "locked") is None
    assert not keys.has_key("openai", "locked")
    assert [keys.get_key("openai", "open") for _ in range(3)] == [K1, K1, K1]
    assert keys.has_key("openai") and keys.has_key("openai", "open")
    clock.now += 299.9
    assert keys.get_key("openai", "locked") is None
    clock.now += 0.2
    assert keys.get_key("openai", "locked") == K1  # tried again after its rest


def test_a_401_rests_the_key_at_that_base_url_and_rotation_moves_to_the_other() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock, auth_cooldown_s=60)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.report_failure("openai", K1, 401, model_id="a", base_url="http://proxy/v1/")
    assert [keys.get_key("openai", m, "http://proxy/v1") for m in "abc"] == [K2, K2, K2]
    assert keys.get_key("openai", "a") == K1  # the provider's default endpoint is another scope
    keys.report_failure("openai", K2, 401, model_id="b", base_url="http://proxy/v1")
    assert keys.get_key("openai", "a", "http://proxy/v1") is None
    assert keys.seconds_until_ready("openai", "a", "http://proxy/v1") is None
    clock.now += 60.1
    assert keys.get_key("openai", "a", "http://proxy/v1") is not None


@pytest.mark.parametrize("status", [401, 403])
def test_a_rejection_reported_without_a_model_rests_the_key_at_the_default_endpoint(
        status: int) -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.report_failure("openai", K1, status)
    assert [keys.get_key("openai") for _ in range(3)] == [K2, K2, K2]
    keys.report_failure("openai", K2, status)
    assert keys.get_key("openai") is None
    assert not keys.has_key("openai")
    clock.now += 300.1
    assert keys.has_key("openai")


def test_a_429_for_one_model_cools_the_key_for_that_model_only() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock, cooldown_s=60)
    keys.add_key("openai", K1)
    keys.report_failure("openai", K1, 429, model_id="busy")
    assert keys.seconds_until_ready("openai", "busy") == pytest.approx(60.0)
    assert keys.seconds_until_ready("openai", "idle") == 0.0
    assert keys.get_key("openai", "busy") == K1  # every key cools: the provider decides
    clock.now += 45
    assert keys.seconds_until_ready("openai", "busy") == pytest.approx(15.0)


def test_seconds_until_ready_is_zero_while_another_key_is_ready() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    assert APIKeyManager().seconds_until_ready("openai") is None  # no key at all
    keys.report_failure("openai", K1, 429, model_id="m")
    assert keys.seconds_until_ready("openai", "m") == 0.0
    keys.report_failure("openai", K2, 429, retry_after_s=5, model_id="m")
    assert keys.seconds_until_ready("openai", "m") == pytest.approx(5.0)


def test_other_statuses_and_unknown_keys_change_nothing() -> None:
    keys = APIKeyManager()
    keys.add_key("openai", K1)
    keys.report_failure("openai", K1, 500)
    keys.report_failure("openai", "sk-someone-elses-key-xxxxxxxx", 401)
    keys.report_failure("anthropic", K1, 401)
    assert keys.get_key("openai") == K1


def test_load_keys_reads_environment_numbered_extras_and_gemini_alias(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", K1)
    monkeypatch.setenv("OPENAI_API_KEY_3", K3)
    monkeypatch.setenv("OPENAI_API_KEY_2", K2)
    monkeypatch.setenv("GEMINI_API_KEY", "gem-key")
    monkeypatch.setenv("OLLAMA_BASE_URL", "http://gpu:11434/")
    keys = APIKeyManager()
    keys.load_keys()
    assert [keys.get_key("openai") for _ in range(3)] == [K1, K2, K3]
    assert keys.get_key("google") == "gem-key" and keys.get_key("gemini") == "gem-key"
    assert keys.providers() == ["google", "openai"]
    assert keys.base_url("ollama") == "http://gpu:11434"
    assert not keys.has_key("anthropic")


def test_env_file_is_parsed_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(
        "# keys for dev\n"
        "\n"
        f"export OPENAI_API_KEY='{K1}'\n"
        f'ANTHROPIC_API_KEY="{K2}"  # team key\n'
        "GOOGLE_API_KEY=plain-value # trailing comment\n"
        "not an assignment\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", K3)
    keys = APIKeyManager()
    keys.load_keys()
    assert keys.get_key("openai") == K1
    assert keys.get_key("anthropic") == K3
    assert keys.get_key("google") == "plain-value"


def test_parse_env_file_handles_quotes_comments_and_export(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("A=1\nexport B = 'two words' # c\nC=\"x#y\"\n#D=4\nE=five # six\n", "utf-8")
    assert parse_env_file(path) == {"A": "1", "B": "two words", "C": "x#y", "E": "five"}


def test_an_explicit_env_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="env file not found"):
        APIKeyManager().load_keys(tmp_path / "missing.env")
    APIKeyManager().load_keys()  # the default .env is optional


def test_redact_scrubs_known_keys_and_secret_shaped_strings() -> None:
    keys = APIKeyManager()
    keys.add_key("google", "AIzaKnownGoogleKey123")
    text = ("auth failed for AIzaKnownGoogleKey123 and Bearer sk-proj-abcdefghijklmnopqrstu; "
            "short sk-abc stays")
    assert keys.redact(text) == "auth failed for *** and Bearer ***; short sk-abc stays"


def test_repr_and_str_show_state_but_never_a_key() -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    keys.add_key("anthropic", K3)
    keys.report_failure("openai", K1, 429)
    keys.report_failure("anthropic", K3, 401)
    text = repr(keys) + str(keys)
    for key in (K1, K2, K3):
        assert key not in text
    assert repr(keys) == "APIKeyManager(anthropic: 1 key, 1 rejected; openai: 2 keys, 1 cooling)"


def test_log_lines_name_the_key_by_label_not_value(caplog: pytest.LogCaptureFixture) -> None:
    keys = APIKeyManager()
    keys.add_key("openai", K1)
    keys.add_key("openai", K2)
    with caplog.at_level(logging.DEBUG, logger="amm"):
        keys.report_failure("openai", K2, 401)
        keys.report_failure("openai", K1, 429)
    assert "openai key #2 rejected with 401" in caplog.text
    assert "openai key #1 rate limited" in caplog.text
    assert K1 not in caplog.text and K2 not in caplog.text
