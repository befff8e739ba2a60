"""Parameter values compared the way PostgreSQL reads them (pgaasctl/plan/settings.py)."""

from __future__ import annotations

import pytest

from pgaasctl.live.catalog import LiveSetting
from pgaasctl.plan.settings import as_text, canonical, is_valid, needs_restart, shown


def live(name: str, setting: str, unit: str | None, vartype: str, *, enumvals: list[str] | None = None,
         file_value: str | None = None, context: str = "user") -> LiveSetting:
    return LiveSetting(name=name, setting=setting, unit=unit, vartype=vartype, context=context, enumvals=enumvals,
                       file_value=file_value, pending_restart=False)


SHARED_BUFFERS = live("shared_buffers", "16384", "8kB", "integer", context="postmaster")
WORK_MEM = live("work_mem", "4096", "kB", "integer")
STATEMENT_TIMEOUT = live("statement_timeout", "0", "ms", "integer")
CHECKPOINT_TIMEOUT = live("checkpoint_timeout", "300", "s", "integer", context="sighup")
MAX_CONNECTIONS = live("max_connections", "100", None, "integer", context="postmaster")
FSYNC = live("fsync", "on", None, "bool", context="sighup")
RANDOM_PAGE_COST = live("random_page_cost", "4", None, "real")
LOG_MIN_MESSAGES = live("log_min_messages", "warning", None, "enum", context="superuser",
                        enumvals=["debug5", "debug1", "info", "notice", "warning", "error", "log", "fatal", "panic"])
APPLICATION_NAME = live("application_name", "psql", None, "string")


# ---------------------------------------------------------------- canonical: equal values

@pytest.mark.parametrize(
    ("a", "b", "setting"),
    [
        ("8MB", 1024, SHARED_BUFFERS),
        ("8MB", "1024", SHARED_BUFFERS),
        ("1GB", 131072, SHARED_BUFFERS),
        ("128MB", "16384", SHARED_BUFFERS),
        ("8192kB", 1024, SHARED_BUFFERS),
        ("4MB", 4096, WORK_MEM),
        ("4MB", "4096kB", WORK_MEM),
        ("1GB", "1048576kB", WORK_MEM),
        ("30s", 30000, STATEMENT_TIMEOUT),
        ("30s", "30000ms", STATEMENT_TIMEOUT),
        ("1min", 60000, STATEMENT_TIMEOUT),
        ("1h", 3600000, STATEMENT_TIMEOUT),
        ("1min", 60, CHECKPOINT_TIMEOUT),
        ("5min", "300", CHECKPOINT_TIMEOUT),
        ("5min", "300s", CHECKPOINT_TIMEOUT),
        ("1d", 86400, CHECKPOINT_TIMEOUT),
        ("2000ms", 2, CHECKPOINT_TIMEOUT),
        (100, "100", MAX_CONNECTIONS),
        ("1.5", 1.5, RANDOM_PAGE_COST),
        ("4", 4.0, RANDOM_PAGE_COST),
    ],
)
def test_equal_values_have_the_same_canonical_form(a: object, b: object, setting: LiveSetting):
    assert canonical(a, setting) == canonical(b, setting)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "setting"),
    [
        ("8MB", 1025, SHARED_BUFFERS),
        ("16MB", 1024, SHARED_BUFFERS),
        ("4MB", "4MB0", WORK_MEM),
        ("30s", 3000, STATEMENT_TIMEOUT),
        ("1min", 61, CHECKPOINT_TIMEOUT),
        ("1min", "1s", CHECKPOINT_TIMEOUT),
        (100, 101, MAX_CONNECTIONS),
        ("1.5", "1.25", RANDOM_PAGE_COST),
    ],
)
def test_different_values_have_different_canonical_forms(a: object, b: object, setting: LiveSetting):
    assert canonical(a, setting) != canonical(b, setting)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("a", "b", "setting"),
    [
        ("8GB", 1048577, SHARED_BUFFERS),    # 8GB is 1048576 blocks of 8kB
        ("1h", 3600001, STATEMENT_TIMEOUT),  # 1h is 3600000 ms
        (1234567, 1234568, WORK_MEM),
    ],
)
def test_large_values_one_unit_apart_are_not_equal(a: object, b: object, setting: LiveSetting):
    # A plan that treats these as equal never corrects the drift; seven-digit values are ordinary
    # (shared_buffers of 8GB, timeouts of an hour in ms, effective_cache_size...).
    assert canonical(a, setting) != canonical(b, setting)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["on", "ON", "true", "True", "yes", "1", "t", "y", True])
def test_true_spellings_are_on(text: object):
    assert canonical(text, FSYNC) == "on"  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["off", "OFF", "false", "no", "0", "f", "n", False])
def test_false_spellings_are_off(text: object):
    assert canonical(text, FSYNC) == "off"  # type: ignore[arg-type]


def test_enums_compare_case_insensitively():
    assert canonical("WARNING", LOG_MIN_MESSAGES) == canonical("warning", LOG_MIN_MESSAGES) == canonical(" Warning ", LOG_MIN_MESSAGES)
    assert canonical("error", LOG_MIN_MESSAGES) != canonical("warning", LOG_MIN_MESSAGES)


def test_strings_are_compared_exactly():
    assert canonical("MyApp", APPLICATION_NAME) != canonical("myapp", APPLICATION_NAME)
    assert canonical(" app ", APPLICATION_NAME) == "app"


def test_unknown_parameters_compare_as_text():
    assert canonical("8MB", None) == "8MB"
    assert canonical("8MB", None) != canonical("8192kB", None)
    assert canonical(True, None) == "on"
    assert canonical(42, None) == "42"


def test_as_text_of_yaml_values():
    assert as_text(True) == "on"
    assert as_text(False) == "off"
    assert as_text(8) == "8"
    assert as_text("30s") == "30s"


# ---------------------------------------------------------------- is_valid

@pytest.mark.parametrize(
    ("value", "setting"),
    [("8MB", SHARED_BUFFERS), (1024, SHARED_BUFFERS), ("30s", STATEMENT_TIMEOUT), ("250ms", STATEMENT_TIMEOUT),
     ("1min", CHECKPOINT_TIMEOUT), (100, MAX_CONNECTIONS), ("1.1", RANDOM_PAGE_COST), ("on", FSYNC), (False, FSYNC),
     ("ERROR", LOG_MIN_MESSAGES), ("anything", APPLICATION_NAME)],
)
def test_valid_values(value: object, setting: LiveSetting):
    assert is_valid(value, setting) is None  # type: ignore[arg-type]


def test_a_memory_unit_on_a_time_parameter_is_rejected():
    problem = is_valid("30MB", STATEMENT_TIMEOUT)
    assert problem is not None
    assert "'MB'" in problem and "ms" in problem and "min" in problem


def test_a_time_unit_on_a_memory_parameter_is_rejected():
    problem = is_valid("30s", WORK_MEM)
    assert problem is not None
    assert "'s'" in problem and "kB" in problem


def test_an_unknown_unit_is_rejected():
    problem = is_valid("8XB", SHARED_BUFFERS)
    assert problem is not None and "'XB'" in problem


def test_a_unit_on_a_unitless_parameter_is_rejected():
    problem = is_valid("100MB", MAX_CONNECTIONS)
    assert problem is not None and "units: none" in problem


@pytest.mark.parametrize("setting", [SHARED_BUFFERS, MAX_CONNECTIONS, RANDOM_PAGE_COST])
def test_non_numbers_are_rejected(setting: LiveSetting):
    problem = is_valid("lots", setting)
    assert problem is not None and "expects a number" in problem and "'lots'" in problem


@pytest.mark.parametrize("value", ["1.2.3", ".", "1..5", "-"])
def test_malformed_numbers_are_rejected_not_crashing_later(value: str):
    # is_valid gates canonical(): what it accepts, canonical must handle without raising.
    problem = is_valid(value, WORK_MEM)
    if problem is None:
        canonical(value, WORK_MEM)
    assert problem is not None


def test_bad_enum_lists_the_choices():
    problem = is_valid("loud", LOG_MIN_MESSAGES)
    assert problem is not None
    assert "'loud'" in problem and "warning" in problem and "panic" in problem


@pytest.mark.parametrize("value", ["maybe", "2", "onn", ""])
def test_bad_bool(value: str):
    problem = is_valid(value, FSYNC)
    assert problem is not None and "on or off" in problem


# ---------------------------------------------------------------- shown / needs_restart

def test_shown_prefers_the_auto_conf_text():
    setting = live("shared_buffers", "16384", "8kB", "integer", file_value="128MB")
    assert shown(setting) == "128MB"


@pytest.mark.parametrize(
    "setting",
    [SHARED_BUFFERS, WORK_MEM, STATEMENT_TIMEOUT, CHECKPOINT_TIMEOUT, MAX_CONNECTIONS, RANDOM_PAGE_COST,
     live("temp_file_limit", "-1", "kB", "integer"), live("effective_cache_size", "524288", "8kB", "integer"),
     live("wal_buffers", "1", "8kB", "integer"), live("log_rotation_age", "1440", "min", "integer")],
    ids=lambda s: f"{s.name}={s.setting}{s.unit or ''}",
)
def test_shown_means_the_same_as_the_live_value(setting: LiveSetting):
    # pg_settings.setting is a number in the parameter's unit; what a person is shown must read back as it.
    text = shown(setting)
    assert is_valid(text, setting) is None, text
    assert canonical(text, setting) == canonical(setting.setting, setting), text


@pytest.mark.parametrize("setting", [SHARED_BUFFERS, WORK_MEM, CHECKPOINT_TIMEOUT],
                         ids=lambda s: s.name)
def test_shown_carries_a_unit_for_a_unit_parameter(setting: LiveSetting):
    text = shown(setting)
    assert not text.isdigit(), text
    assert text.rstrip("BkMGTsminhdu").isdigit(), text


def test_shown_of_8kb_blocks_is_not_the_raw_block_count():
    assert shown(SHARED_BUFFERS) not in ("16384", "16384kB", "16384 8kB")


def test_shown_leaves_unitless_settings_alone():
    assert shown(MAX_CONNECTIONS) == "100"
    assert shown(FSYNC) == "on"
    assert shown(LOG_MIN_MESSAGES) == "warning"
    assert shown(APPLICATION_NAME) == "psql"


def test_needs_restart_only_for_postmaster_context():
    assert needs_restart(SHARED_BUFFERS)
    assert not needs_restart(WORK_MEM)
    assert not needs_restart(CHECKPOINT_TIMEOUT)
