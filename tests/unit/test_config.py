"""settings_from_env: embedded defaults, then the environment it is given."""

from pathlib import Path

import pytest

from rideshare.config import settings_from_env


@pytest.fixture
def defaults() -> dict:
    return settings_from_env({})


def test_job_defaults_match_the_original_design(defaults):
    assert defaults["JOB_RETRY_ATTEMPTS"] == 3
    assert defaults["JOB_RETRY_DELAY"] == 5000
    assert defaults["JOB_TIMEOUT"] == 30000
    assert defaults["JOB_KEEP_COMPLETED"] == 100
    assert defaults["JOB_KEEP_FAILED"] == 50


def test_default_database_is_an_sqlite_file_under_var(defaults):
    url = defaults["DATABASE_URL"]
    assert url.startswith("sqlite:///")
    path = Path(url.removeprefix("sqlite:///"))
    assert path.is_absolute()
    assert path == Path("var").resolve() / "rideshare.sqlite3"


def test_database_file_follows_the_var_dir(tmp_path):
    settings = settings_from_env({"RIDESHARE_VAR_DIR": str(tmp_path)})
    assert settings["DATABASE_URL"] == f"sqlite:///{tmp_path / 'rideshare.sqlite3'}"
    assert settings["VAR_DIR"] == str(tmp_path)


def test_other_defaults(defaults):
    assert defaults["REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert defaults["MAX_CONTENT_LENGTH"] == 64 * 1024
    assert defaults["TOKEN_TTL_SECONDS"] == 3600
    assert defaults["JOB_KEY_PREFIX"] == "rideshare"
    assert defaults["SMTP_STARTTLS"] is False


def test_overrides_from_a_dict():
    settings = settings_from_env(
        {
            "JOB_RETRY_ATTEMPTS": "7",
            "JOB_RETRY_DELAY": "250",
            "JOB_TIMEOUT": "1000",
            "DATABASE_URL": "postgresql+psycopg://u@db/rides",
            "REDIS_HOST": "cache",
            "REDIS_PASSWORD": "a@b",
            "SECRET_KEY": "s" * 40,
            "SMTP_PORT": "2525",
            "SMTP_STARTTLS": "yes",
            "MAX_CONTENT_LENGTH": "1024",
        }
    )
    assert (settings["JOB_RETRY_ATTEMPTS"], settings["JOB_RETRY_DELAY"], settings["JOB_TIMEOUT"]) == (7, 250, 1000)
    assert settings["DATABASE_URL"] == "postgresql+psycopg://u@db/rides"
    assert settings["REDIS_URL"] == "redis://:a%40b@cache:6379/0"
    assert settings["SECRET_KEY"] == "s" * 40
    assert settings["SMTP_PORT"] == 2525
    assert settings["SMTP_STARTTLS"] is True
    assert settings["MAX_CONTENT_LENGTH"] == 1024


@pytest.mark.parametrize("blank", ["", "   "])
def test_blank_numbers_and_urls_fall_back_to_the_defaults(blank):
    settings = settings_from_env({"JOB_RETRY_ATTEMPTS": blank, "JOB_TIMEOUT": blank, "DATABASE_URL": ""})
    assert settings["JOB_RETRY_ATTEMPTS"] == 3
    assert settings["JOB_TIMEOUT"] == 30000
    assert settings["DATABASE_URL"].startswith("sqlite:///")


def test_a_non_numeric_number_is_an_error():
    with pytest.raises(ValueError):
        settings_from_env({"JOB_RETRY_ATTEMPTS": "three"})


def test_the_given_dict_is_not_changed():
    env = {"JOB_RETRY_ATTEMPTS": "4"}
    settings_from_env(env)
    assert env == {"JOB_RETRY_ATTEMPTS": "4"}


def test_none_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("JOB_RETRY_DELAY", "1234")
    assert settings_from_env()["JOB_RETRY_DELAY"] == 1234
    assert settings_from_env({})["JOB_RETRY_DELAY"] == 5000
