"""Config validation: every rule reports its path, line, column and what to do."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from runner import ConfigError
from runner._errors import Problem
from runner.config._load import load_config, load_config_text

PROVIDERS = """\
providers:
  - id: claude-sonnet
    type: simulated
  - id: gemini-flash
    type: simulated
default_provider: gemini-flash
"""


def problems(text: str, environ: Mapping[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, source="c.yaml", environ=environ or {})
    assert str(info.value)  # every problem renders
    return info.value.problems


def only(text: str, environ: Mapping[str, str] | None = None) -> Problem:
    found = problems(text, environ)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def at(p: Problem) -> tuple[str, int | None, int | None]:
    return (p.path, p.line, p.column)


def test_yaml_syntax_error_has_its_position() -> None:
    """A YAML syntax error is one problem at the place the parser stopped."""
    p = only("version: 1\nproviders: [a, b\n")
    assert at(p) == ("", 3, 1)
    assert p.message.startswith("YAML syntax error: expected ',' or ']'")
    assert p.file == "c.yaml"


def test_duplicate_top_level_key_names_both_lines() -> None:
    """A repeated top-level key is reported at the repeat, naming the first line."""
    p = only(PROVIDERS + "default_provider: claude-sonnet\n")
    assert at(p) == ("default_provider", 7, 1)
    assert p.message == "duplicate key 'default_provider' (first at line 6)"


def test_duplicate_key_deep_inside_roles() -> None:
    """Repeated keys are found at any depth, with the path of the repeat."""
    text = PROVIDERS + "roles:\n  coder:\n    provider: gemini-flash\n    provider: claude-sonnet\n"
    p = only(text)
    assert at(p) == ("roles.coder.provider", 10, 5)
    assert p.message == "duplicate key 'provider' (first at line 9)"


def test_unknown_field_suggests_the_close_match() -> None:
    """A misspelt field names the field it was probably meant to be."""
    text = PROVIDERS + "roles:\n  coder: {provider: claude-sonnet, fallback: [gemini-flash]}\n"
    p = only(text)
    assert at(p) == ("roles.coder.fallback", 8, 36)
    assert p.message == "unknown field 'fallback'"
    assert p.hint == "did you mean 'fallbacks'?"


def test_unknown_field_without_close_match_lists_the_known_ones() -> None:
    """An unknown field far from every known one lists what is allowed."""
    p = only(PROVIDERS + "metrics: {store: none, colour: blue}\n")
    assert at(p) == ("metrics.colour", 7, 24)
    assert p.hint == "known: store, path"


def test_unknown_parameter_suggests_the_close_match() -> None:
    """A misspelt generation parameter is called a parameter and gets a suggestion."""
    p = only(PROVIDERS + "defaults:\n  temprature: 0.5\n")
    assert at(p) == ("defaults.temprature", 8, 3)
    assert p.message == "unknown parameter 'temprature'"
    assert p.hint == "did you mean 'temperature'?"


def test_wrong_type_says_what_was_expected() -> None:
    """A value of the wrong type says what kind of value is expected and what it got."""
    p = only(PROVIDERS + "concurrency: lots\n")
    assert at(p) == ("concurrency", 7, 14)
    assert p.message == "expected a whole number, got a string ('lots')"


def test_wrong_type_for_a_section() -> None:
    """A section written as a list instead of a mapping lists its fields."""
    p = only(PROVIDERS + "logging: [info]\n")
    assert at(p) == ("logging", 7, 10)
    assert p.message == "expected a mapping, got a list"
    assert p.hint == "fields: level, format"


def test_string_field_given_a_number() -> None:
    """A number where a string is expected suggests quoting it."""
    text = "providers:\n  - {id: a, type: simulated, model: 4}\ndefault_provider: a\n"
    p = only(text)
    assert at(p) == ("providers[0].model", 2, 37)
    assert (p.message, p.hint) == ("expected a string, got 4", "quote it")


def test_duplicate_provider_ids() -> None:
    """A provider id used twice is reported at the second, naming the first."""
    text = PROVIDERS + "  - id: claude-sonnet\n    type: simulated\n"
    text = text.replace("default_provider: gemini-flash\n", "") + "default_provider: gemini-flash\n"
    p = only(text)
    assert at(p) == ("providers[2].id", 6, 9)
    assert p.message == "duplicate provider id 'claude-sonnet' (first at providers[0].id, line 2)"


def test_unknown_provider_type() -> None:
    """An unknown provider type lists the known types and the close match."""
    p = only("providers:\n  - id: a\n    type: openia\ndefault_provider: a\n")
    assert at(p) == ("providers[0].type", 3, 11)
    assert (
        p.message == "unknown provider type 'openia'; known: anthropic, google, openai, simulated"
    )
    assert p.hint == "did you mean 'openai'?"


def test_unknown_role_provider_lists_known_ids() -> None:
    """A role naming an unknown provider lists the known ids and the close match."""
    p = only(PROVIDERS + "roles:\n  coder:\n    provider: claude\n")
    assert at(p) == ("roles.coder.provider", 9, 15)
    assert p.message == "unknown provider 'claude'; known: claude-sonnet, gemini-flash"
    assert p.hint == "did you mean 'claude-sonnet'?"


def test_unknown_fallback_has_its_index() -> None:
    """An unknown fallback is reported with its index in the list."""
    text = (
        PROVIDERS + "roles:\n  coder: {provider: claude-sonnet, fallbacks: [gemini-flash, gpt]}\n"
    )
    p = only(text)
    assert at(p) == ("roles.coder.fallbacks[1]", 8, 62)
    assert p.message == "unknown provider 'gpt'; known: claude-sonnet, gemini-flash"
    assert p.hint is None


def test_unknown_default_provider() -> None:
    """An unknown default_provider is reported like any other reference."""
    text = PROVIDERS.replace("default_provider: gemini-flash", "default_provider: gemini")
    p = only(text)
    assert at(p) == ("default_provider", 6, 19)
    assert p.message == "unknown provider 'gemini'; known: claude-sonnet, gemini-flash"
    assert p.hint == "did you mean 'gemini-flash'?"


def test_primary_repeated_as_fallback() -> None:
    """The primary provider listed again as a fallback is a repeat in the chain."""
    text = (
        PROVIDERS + "roles:\n  coder:\n    provider: gemini-flash\n    fallbacks: [gemini-flash]\n"
    )
    p = only(text)
    assert at(p) == ("roles.coder.fallbacks[0]", 10, 17)
    assert (
        p.message
        == "provider 'gemini-flash' is already in this role's chain (at roles.coder.provider)"
    )


def test_fallback_repeated_within_fallbacks() -> None:
    """The same fallback twice is reported at the second."""
    text = (
        PROVIDERS
        + "roles:\n  coder:\n    provider: claude-sonnet\n"
        + "    fallbacks:\n      - gemini-flash\n      - gemini-flash\n"
    )
    p = only(text)
    assert at(p) == ("roles.coder.fallbacks[1]", 12, 9)
    assert p.message.endswith("already in this role's chain (at roles.coder.fallbacks[0])")


def test_missing_environment_variable_is_named_never_valued() -> None:
    """An unset variable is named with its path; nothing of the environment is shown."""
    text = (
        "providers:\n  - id: a\n    type: openai\n    model: ${OPENAI_MODEL}\n"
        "    api_key: ${OPENAI_API_KEY}\ndefault_provider: a\n"
    )
    p = only(text, environ={"OTHER": "sk-not-this-one"})
    assert at(p) == ("providers[0].model", 4, 12)
    assert p.message == "environment variable OPENAI_MODEL is not set"
    assert "sk-not-this-one" not in p.render()


def test_bad_variable_reference() -> None:
    """A malformed ${...} says how to write one."""
    text = "providers:\n  - {id: a, type: simulated, model: '${1x}'}\ndefault_provider: a\n"
    p = only(text)
    assert at(p) == ("providers[0].model", 2, 37)
    assert p.message == "bad variable reference '${1x}'"
    assert p.hint == "write ${NAME} or ${NAME:-default}; write $$ for a literal $"


@pytest.mark.parametrize(
    ("line", "path", "column", "message"),
    [
        (
            "defaults: {temperature: 2.5}",
            "defaults.temperature",
            25,
            "must be between 0 and 2, got 2.5",
        ),
        ("defaults: {top_p: 1.5}", "defaults.top_p", 19, "must be between 0 and 1, got 1.5"),
        ("defaults: {max_tokens: 0}", "defaults.max_tokens", 24, "must be at least 1, got 0"),
        ("concurrency: 0", "concurrency", 14, "must be at least 1, got 0"),
        ("retry: {max_attempts: 0}", "retry.max_attempts", 23, "must be at least 1, got 0"),
        ("cooldown: {seconds: -1}", "cooldown.seconds", 21, "must be at least 0, got -1"),
    ],
)
def test_ranges(line: str, path: str, column: int, message: str) -> None:
    """Out-of-range numbers say the range and the value."""
    p = only(PROVIDERS + line + "\n")
    assert at(p) == (path, 7, column)
    assert p.message == message


def test_provider_timeout_must_be_positive() -> None:
    """A provider timeout of zero is out of range."""
    p = only("providers:\n  - id: a\n    type: simulated\n    timeout: 0s\ndefault_provider: a\n")
    assert at(p) == ("providers[0].timeout", 4, 14)
    assert p.message == "must be greater than 0, got a string ('0s')"


def test_role_parameters_are_checked() -> None:
    """Role parameters are checked like the defaults."""
    text = (
        PROVIDERS
        + "roles:\n  coder:\n    provider: gemini-flash\n    parameters: {temperature: 3}\n"
    )
    p = only(text)
    assert at(p) == ("roles.coder.parameters.temperature", 10, 31)


def test_bad_duration_says_what_is_accepted() -> None:
    """A duration that cannot be read lists the accepted forms."""
    p = only(PROVIDERS + "retry: {max_delay: 5 minutes}\n")
    assert at(p) == ("retry.max_delay", 7, 20)
    assert p.message == "not a duration: a string ('5 minutes')"
    assert p.hint == "use seconds (30, 0.5) or a number with ms, s, m, h or d (500ms, 30s, 2m)"


def test_unknown_failure_code() -> None:
    """A simulated failure code must be one of the error codes."""
    text = (
        "providers:\n  - {id: a, type: simulated, failure_codes: [rate_limitd]}\n"
        "default_provider: a\n"
    )
    p = only(text)
    assert at(p) == ("providers[0].failure_codes[0]", 2, 46)
    assert (p.message, p.hint) == (
        "unknown error code 'rate_limitd'",
        "did you mean 'rate_limited'?",
    )


def test_missing_required_fields() -> None:
    """A config without providers or default_provider says both are needed."""
    found = problems("version: 1\n")
    assert [(p.path, p.line, p.message) for p in found] == [
        ("", 1, "missing required field 'providers'"),
        ("", 1, "missing required field 'default_provider'"),
    ]


def test_empty_provider_list() -> None:
    """An empty providers list asks for at least one."""
    p = only("providers: []\ndefault_provider: a\n")
    assert at(p) == ("providers", 1, 12)
    assert p.message == "no providers defined"


def test_duplicate_stage_names() -> None:
    """Stage names repeat within one workflow only by mistake."""
    text = PROVIDERS + (
        "workflows:\n  quick:\n    stages:\n"
        "      - {name: plan, role: planner}\n      - {name: plan, role: coder}\n"
    )
    p = only(text)
    assert at(p) == ("workflows.quick.stages[1].name", 11, 16)
    assert p.message == "duplicate stage name 'plan' (first at stages[0])"


def test_source_is_not_a_file_field() -> None:
    """The loader sets Config.source; the file may not."""
    p = only(PROVIDERS + "source: elsewhere\n")
    assert (p.path, p.line, p.message) == ("source", 7, "unknown field 'source'")


def test_mixing_the_two_forms() -> None:
    """A top-level provider: next to providers: is an error pointing to the guide."""
    p = only("provider: openai\n" + PROVIDERS)
    assert at(p) == ("provider", 1, 1)
    assert p.message.startswith(
        "the single-provider form (provider:, model:, api_key:) cannot be mixed"
    )
    assert p.hint == "move the provider into providers: (see docs/migration.md)"


def test_single_form_problems_keep_their_written_paths() -> None:
    """In the single-provider form, problems name the keys as written at the top level."""
    text = "provider: openia\nmodle: gpt-4o\nparameters: {temperature: 9}\n"
    found = problems(text)
    assert [(at(p), p.message) for p in found] == [
        (
            ("provider", 1, 11),
            "unknown provider type 'openia'; known: anthropic, google, openai, simulated",
        ),
        (("modle", 2, 1), "unknown field 'modle'"),
        (("parameters.temperature", 3, 27), "must be between 0 and 2, got 9"),
    ]
    assert found[1].hint == "did you mean 'model'?"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("# only a comment\n", "the file is empty"),
    ],
)
def test_empty_file(text: str, message: str) -> None:
    """An empty file (or only comments) is one clear problem."""
    p = only(text)
    assert (p.path, p.message, p.file) == ("", message, "c.yaml")


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a whole number")],
)
def test_non_mapping_file(text: str, kind: str) -> None:
    """A file that is not a mapping says what it is instead."""
    p = only(text)
    assert at(p) == ("", 1, 1)
    assert p.message == f"the config must be a mapping of fields, got {kind}"


def test_missing_file(tmp_path: Path) -> None:
    """A missing file names the file and what to do."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    (p,) = info.value.problems
    assert (p.file, p.message) == (str(missing), "cannot read the config: no such file")
    assert p.hint == "check the path, or pass --config PATH / set RUNNER_CONFIG"


def test_directory_instead_of_file(tmp_path: Path) -> None:
    """A directory given as the config is named as such."""
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert (
        info.value.problems[0].message == "cannot read the config: this is a directory, not a file"
    )


MANY_MISTAKES = """\
version: 1
defaults: {temprature: 0.5}
providers:
  - id: openai-gpt4o
    type: openai
    base_url: ${OPENAI_BASE_URL}
    timeout: soon
  - id: openai-gpt4o
    type: antropic
roles:
  coder: {provider: openai-gpt4o, fallbacks: [claude, openai-gpt4o]}
  reviewer: {provider: claude-sonnet}
default_provider: gemini-flash
concurrency: 0
logging: {level: loud}
logging: {level: info}
"""


def test_every_mistake_is_reported_in_one_run_in_file_order() -> None:
    """A file with many mistakes reports each one, sorted by line."""
    found = problems(MANY_MISTAKES)
    assert [(p.path, p.line) for p in found] == [
        ("defaults.temprature", 2),
        ("providers[0]", 4),
        ("providers[0].base_url", 6),
        ("providers[0].timeout", 7),
        ("providers[1].id", 8),
        ("providers[1].type", 9),
        ("roles.coder.fallbacks[0]", 11),
        ("roles.coder.fallbacks[1]", 11),
        ("roles.reviewer.provider", 12),
        ("default_provider", 13),
        ("concurrency", 14),
        ("logging.level", 15),
        ("logging", 16),
    ]
    rendered = [p.render() for p in found]
    assert rendered[1] == (
        "c.yaml:4:5: providers[0]: provider type openai needs a model "
        "(add model:, for example model: gpt-4o)"
    )
    assert rendered[2] == (
        "c.yaml:6:15: providers[0].base_url: environment variable OPENAI_BASE_URL is not set "
        "(set OPENAI_BASE_URL, or give a default: ${OPENAI_BASE_URL:-...})"
    )
    assert rendered[6] == (
        "c.yaml:11:47: roles.coder.fallbacks[0]: unknown provider 'claude'; known: openai-gpt4o"
    )


ADV = "sk-adv-SECRET-0123456789abcdef"
_ENV_CASES = {
    "default_provider": (
        "providers:\n  - {id: a, type: simulated}\ndefault_provider: ${ADV_KEY}\n",
        "unknown provider (the value of ${ADV_KEY}); known: a",
    ),
    "a role's provider": (
        "providers:\n  - {id: a, type: simulated}\nroles:\n  coder: {provider: '${ADV_KEY}'}\n"
        "default_provider: a\n",
        "unknown provider (the value of ${ADV_KEY}); known: a",
    ),
    "a fallback": (
        "providers:\n  - {id: a, type: simulated}\n"
        "roles:\n  coder: {provider: a, fallbacks: ['${ADV_KEY}']}\ndefault_provider: a\n",
        "unknown provider (the value of ${ADV_KEY}); known: a",
    ),
    "a known id from the environment": (
        "providers:\n  - {id: '${ADV_KEY}', type: simulated}\ndefault_provider: b\n",
        "unknown provider 'b'; known: (the value of ${ADV_KEY})",
    ),
    "a duplicate provider id": (
        "providers:\n  - {id: '${ADV_KEY}', type: simulated}\n"
        "  - {id: '${ADV_KEY}', type: simulated}\ndefault_provider: '${ADV_KEY}'\n",
        "duplicate provider id (the value of ${ADV_KEY}) (first at providers[0].id, line 2)",
    ),
    "a repeat in a chain": (
        "providers:\n  - {id: '${ADV_KEY}', type: simulated}\n"
        "roles:\n  coder: {provider: '${ADV_KEY}', fallbacks: ['${ADV_KEY}']}\n"
        "default_provider: '${ADV_KEY}'\n",
        "provider (the value of ${ADV_KEY}) is already in this role's chain"
        " (at roles.coder.provider)",
    ),
    "a provider type": (
        "providers:\n  - {id: a, type: '${ADV_KEY}'}\ndefault_provider: a\n",
        "unknown provider type (the value of ${ADV_KEY}); known: anthropic, google, openai,"
        " simulated",
    ),
    "the single-provider form": (
        "provider: ${ADV_KEY}\nmodel: m\n",
        "unknown provider type (the value of ${ADV_KEY}); known: anthropic, google, openai,"
        " simulated",
    ),
    "a failure code": (
        "providers:\n  - {id: a, type: simulated, failure_codes: ['${ADV_KEY}']}\n"
        "default_provider: a\n",
        "unknown error code (the value of ${ADV_KEY})",
    ),
    "a failure code as one string": (
        "providers:\n  - {id: a, type: simulated, failure_codes: '${ADV_KEY}'}\n"
        "default_provider: a\n",
        "unknown error code (the value of ${ADV_KEY})",
    ),
    "a number": (
        "providers:\n  - {id: a, type: simulated}\ndefault_provider: a\nconcurrency: ${ADV_KEY}\n",
        "expected a whole number, got a string from ${ADV_KEY}",
    ),
    "a duration": (
        "providers:\n  - {id: a, type: simulated}\ndefault_provider: a\ngrace_period: ${ADV_KEY}\n",
        "not a duration: a string from ${ADV_KEY}",
    ),
    "a choice": (
        "providers:\n  - {id: a, type: simulated}\ndefault_provider: a\n"
        "logging: {level: '${ADV_KEY}'}\n",
        "must be one of debug, error, info, warning; got a string from ${ADV_KEY}",
    ),
    "a stage name": (
        "providers:\n  - {id: a, type: simulated}\ndefault_provider: a\n"
        "workflows:\n  w:\n    stages:\n      - {name: '${ADV_KEY}', role: coder}\n"
        "      - {name: '${ADV_KEY}', role: coder}\n",
        "duplicate stage name (the value of ${ADV_KEY}) (first at stages[0])",
    ),
}


@pytest.mark.parametrize("case", list(_ENV_CASES))
def test_a_value_from_the_environment_is_named_by_its_variable_never_printed(case: str) -> None:
    """Wherever a ${VAR} value is wrong, the message names the variable and hides the value."""
    text, message = _ENV_CASES[case]
    found = problems(text, environ={"ADV_KEY": ADV})
    rendered = "\n".join(p.render() for p in found)
    assert message in [p.message for p in found], rendered
    for run in {ADV[i : i + 8] for i in range(len(ADV) - 7)}:
        assert run not in rendered


@pytest.mark.parametrize(
    ("line", "environ", "path", "message"),
    [
        (
            "concurrency: ${RUNNER_CONCURRENCY}",
            {"RUNNER_CONCURRENCY": "0"},
            "concurrency",
            "RUNNER_CONCURRENCY=0 must be at least 1",
        ),
        (
            "worker: {port: '${PORT}'}",
            {"PORT": "99999"},
            "worker.port",
            "PORT=99999 must be between 0 and 65535",
        ),
    ],
)
def test_a_number_from_a_variable_out_of_range_names_variable_and_value(
    line: str, environ: dict[str, str], path: str, message: str
) -> None:
    """A number that came from ${VAR}: the message names the variable and its (numeric) value."""
    p = only(PROVIDERS + line + "\n", environ)
    assert (p.path, p.message) == (path, message)
    assert p.render().startswith(f"c.yaml:{PROVIDERS.count(chr(10)) + 1}:")


def test_a_variable_that_is_not_a_number_is_still_not_printed() -> None:
    """Only a value that reads as a number is shown; text from ${VAR} may be a key."""
    p = only(
        PROVIDERS + "concurrency: ${RUNNER_CONCURRENCY}\n", {"RUNNER_CONCURRENCY": "sk-secret"}
    )
    assert "sk-secret" not in p.render()
    assert "RUNNER_CONCURRENCY" in p.message


@pytest.mark.parametrize(
    ("line", "reference"),
    [
        ("  - {id: a, type: openai, model: m, api_key: ${OPENAI_API_KEY}}", "${OPENAI_API_KEY}"),
        ("  - {id: a, type: simulated, model: ${MODEL:-sim}}", "${MODEL:-sim}"),
    ],
)
def test_a_variable_in_a_flow_mapping_gets_a_hint_to_quote_it(line: str, reference: str) -> None:
    """``{api_key: ${KEY}}`` breaks YAML's flow mapping: the hint says to quote the reference."""
    p = only(f"providers:\n{line}\ndefault_provider: a\n")
    assert p.message.startswith("YAML syntax error: ")
    assert p.hint == f'inside {{...}} or [...] quote a variable reference: write "{reference}"'


def test_a_plain_syntax_error_keeps_the_general_hint() -> None:
    """Without a ${...} at the place, the hint stays about indentation, quotes and brackets."""
    p = only("providers: [{id: a, type: simulated}\ndefault_provider: a\n")
    assert p.hint == "check indentation, quotes and brackets around this place"
