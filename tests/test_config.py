"""Configuration comes from DALC_* variables only, and a wrong value names its variable."""
from __future__ import annotations

import pytest

from app.config import Config, ConfigError, mask_password


def test_defaults_are_the_embedded_shape_on_port_8080():
    config = Config.from_env({})
    assert config.port == 8080
    assert config.database_url.startswith("sqlite:///")
    assert config.embedded_broker


def test_variables_override_defaults():
    config = Config.from_env({
        "DALC_DATABASE_URL": "postgresql://u:p@db:5432/dalc",
        "DALC_BROKER_URL": "amqp://u:p@mq:5672/%2F",
        "DALC_PORT": "9000",
        "DALC_HOST": "0.0.0.0",
        "DALC_QUEUE_TYPE": "QUORUM",
        "DALC_MAX_EXPRESSION_LENGTH": "500",
        "DALC_MIGRATE_ON_START": "false",
    })
    assert config.port == 9000 and config.host == "0.0.0.0"
    assert config.broker_url == "amqp://u:p@mq:5672/%2F" and not config.embedded_broker
    assert config.queue_type == "quorum"
    assert config.max_expression_length == 500
    assert config.migrate_on_start is False


@pytest.mark.parametrize(
    "name, value",
    [
        ("DALC_PORT", "eighty"),
        ("DALC_PORT", "70000"),
        ("DALC_PORT", "-1"),
        ("DALC_WEB_METRICS_PORT", "70000"),
        ("DALC_DATABASE_URL", "mysql://x/y"),
        ("DALC_BROKER_URL", "redis://localhost"),
        ("DALC_QUEUE_TYPE", "stream"),
        ("DALC_QUEUE_NAME", "has space"),
        ("DALC_MAX_WAIT_SECONDS", "nan"),
        ("DALC_MAX_BATCH_SIZE", "0"),
        ("DALC_LOG_LEVEL", "loud"),
        ("DALC_MIGRATE_ON_START", "maybe"),
        ("DALC_AUTH", "sometimes"),
        ("DALC_RATE_LIMIT", "fast"),
        ("DALC_RATE_LIMIT", "0/second"),
        ("DALC_RATE_LIMIT", "200/second;5/minute"),
        ("DALC_RATE_LIMIT_STORAGE", "redis"),
    ],
)
def test_a_wrong_value_stops_the_start_naming_the_variable(name, value):
    with pytest.raises(ConfigError, match=name):
        Config.from_env({name: value})


@pytest.mark.parametrize("threads", ["DALC_WEB_THREADS", "DALC_WORKER_THREADS"])
def test_the_pool_must_hold_a_connection_for_every_thread(threads):
    with pytest.raises(ConfigError, match=f"DALC_DB_POOL_SIZE=20 must be at least .*{threads} \\+ 4"):
        Config.from_env({threads: "17"})
    assert Config.from_env({threads: "16"}).db_pool_size == 20
    assert Config.from_env({threads: "32", "DALC_DB_POOL_SIZE": "36"}).db_pool_size == 36


def test_the_web_metrics_port_is_off_by_default_and_cannot_be_the_api_port():
    assert Config.from_env({}).web_metrics_port == 0
    assert Config.from_env({"DALC_WEB_METRICS_PORT": "9090"}).web_metrics_port == 9090
    with pytest.raises(ConfigError, match="DALC_WEB_METRICS_PORT=8080 must differ from DALC_PORT"):
        Config.from_env({"DALC_WEB_METRICS_PORT": "8080"})


def test_auth_is_off_unless_required():
    assert Config.from_env({}).auth == "off"
    assert Config.from_env({"DALC_AUTH": "Required"}).auth == "required"


def test_rate_limits_are_off_unless_set_and_counted_in_the_database():
    assert (Config.from_env({}).rate_limit, Config.from_env({}).rate_limit_storage) == (None, "database")
    config = Config.from_env({"DALC_RATE_LIMIT": "200/second", "DALC_RATE_LIMIT_STORAGE": "memory://"})
    assert (config.rate_limit, config.rate_limit_storage) == ("200/second", "memory://")


@pytest.mark.parametrize("name, value", [
    ("DALC_DATABASE_URL", "mysql://dalc:Sup3r-Secret@db/dalc"),
    ("DALC_BROKER_URL", "amqp://u:p@mq/%2F;redis://dalc:Sup3r-Secret@mq:6379"),
    ("DALC_DATABASE_URL", "postgre://dalc:Sup3r-Secret@db:notaport/dalc"),
])
def test_a_configuration_error_masks_the_password_in_a_url(name, value):
    with pytest.raises(ConfigError) as error:
        Config.from_env({name: value})
    assert "Sup3r-Secret" not in str(error.value) and "***" in str(error.value)


def test_masking_keeps_everything_but_the_password():
    assert mask_password("amqp://guest:guest@mq:5672/%2F;amqp://a:b@c/v") == "amqp://guest:***@mq:5672/%2F;amqp://a:***@c/v"
    assert mask_password("postgresql://u@h/d") == "postgresql://u@h/d"
    assert mask_password("sqlite:///dalc.db") == "sqlite:///dalc.db"


def test_blank_variables_mean_the_default():
    assert Config.from_env({"DALC_BROKER_URL": "", "DALC_PORT": " "}) == Config()


def test_results_longer_than_pythons_default_int_text_limit_can_be_allowed():
    import json
    import sys

    from app.runtime import evaluator_limits

    limit = sys.get_int_max_str_digits()
    try:
        config = Config.from_env({"DALC_EVAL_MAX_RESULT_DIGITS": "6000"})
        from app.evaluator import Evaluator

        value = Evaluator(evaluator_limits(config)).evaluate("10 ** 5000")
        assert json.dumps(value) == "1" + "0" * 5000
    finally:
        sys.set_int_max_str_digits(limit)
