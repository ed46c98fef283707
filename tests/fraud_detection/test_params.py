"""params.yaml validation: every mistake is a ParamsError naming the full dotted key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pydantic
import pytest
from ruamel.yaml import YAML

from fraud_detection.errors import ParamsError
from fraud_detection.io.files import load_params
from fraud_detection.params import Params, parse_params

REPO_PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def minimal() -> dict[str, Any]:
    """The smallest valid mapping: only ``train.models`` has no default."""
    return {"train": {"models": {"logreg": {"kind": "logistic_regression"}}}}


def with_section(path: str, value: Any) -> dict[str, Any]:
    """``minimal()`` with ``value`` set at the dotted ``path`` (creating sections)."""
    raw = minimal()
    node = raw
    *parents, leaf = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    return raw


# ------------------------------------------------------------------ the real file


def test_repo_params_yaml_loads():
    params = load_params(REPO_PARAMS)
    assert params.data.source == "simulator"
    assert params.data.simulator.n_customers == 5000
    assert params.data.simulator.n_terminals == 10000
    assert params.data.simulator.start_date == dt.date(2018, 6, 18)
    assert params.data.simulator.scenarios.large_amount.threshold == 220.0
    assert params.split.train_start == dt.date(2018, 7, 25)
    assert params.features.customer_windows_days == [1, 7, 30]
    assert set(params.train.models) == {
        "dummy",
        "logreg_l2",
        "logreg_l1",
        "decision_tree",
        "random_forest",
        "xgboost",
        "lightgbm",
        "mlp",
    }
    assert params.train.models["decision_tree"].grid == {"max_depth": [2, 6, None]}


def test_repo_params_simulate_enough_days_for_the_split_and_the_feature_history():
    params = load_params(REPO_PARAMS)
    sim, split = params.data.simulator, params.split
    first_day = sim.start_date
    last_day = sim.start_date + dt.timedelta(days=sim.n_days - 1)
    test_last = split.train_start + dt.timedelta(
        days=split.train_days + split.delay_days + split.test_days - 1
    )
    longest_window = max(params.features.customer_windows_days)
    history = (split.train_start - first_day).days
    assert history >= longest_window
    assert test_last <= last_day


def test_minimal_mapping_gets_the_params_yaml_defaults():
    params = parse_params(minimal())
    assert params.data.simulator.n_customers == 5000
    assert params.data.simulator.n_days == 58
    assert params.data.simulator.start_date == dt.date(2018, 6, 18)
    assert params.features.label_delay_days == 7
    assert params.train.models["logreg"].strategies == ["none"]


def test_params_are_immutable():
    params = parse_params(minimal())
    with pytest.raises(pydantic.ValidationError):
        params.split.train_days = 3  # type: ignore[misc]


# ----------------------------------------------------------------- parse_params


@pytest.mark.parametrize(
    ("path", "value", "expected_key"),
    [
        ("data.simulator.n_customer", 10, "data.simulator.n_customer"),
        ("data.simulator.scenarios.large_amount.treshold", 10.0, "large_amount.treshold"),
        ("features.customer_window_days", [1], "features.customer_window_days"),
        ("train.cv.n_split", 3, "train.cv.n_split"),
        ("evaluate.threshold.cost_fp", 1.0, "evaluate.threshold.cost_fp"),
        ("splitt", {}, "splitt"),
    ],
)
def test_unknown_key_is_named_with_its_full_path(path, value, expected_key):
    with pytest.raises(ParamsError) as caught:
        parse_params(with_section(path, value))
    message = str(caught.value)
    assert f"{path}: unknown key" in message
    assert expected_key in message


def test_mistyped_key_inside_a_model_entry_is_named():
    raw = minimal()
    raw["train"]["models"]["logreg"]["strategy"] = ["none"]
    with pytest.raises(ParamsError, match=r"train\.models\.logreg\.strategy: unknown key"):
        parse_params(raw)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("data.simulator.n_customers", "many", r"data\.simulator\.n_customers: .*'many'"),
        ("data.simulator.n_customers", 0, r"data\.simulator\.n_customers: .*greater than 0"),
        ("data.simulator.start_date", "someday", r"data\.simulator\.start_date: .*'someday'"),
        ("data.source", "parquet", r"data\.source: .*'parquet'"),
        ("split.test_size", 1.5, r"split\.test_size: .*less than 1"),
        ("train.cv.n_splits", 1, r"train\.cv\.n_splits: .*greater than or equal to 2"),
        ("features.night_last_hour", 24, r"features\.night_last_hour: .*24"),
        ("evaluate.threshold.rule", "max_recall", r"evaluate\.threshold\.rule: .*max_recall"),
        (
            "train.calibration.method",
            "platt",
            r"train\.calibration\.method: Input should be 'sigmoid', 'isotonic' or 'none' "
            r"\(got 'platt'\)",
        ),
        ("train.calibration.min_positives", 0, r"train\.calibration\.min_positives: .*than 0"),
        ("train.selection.tie_break", "auc", r"train\.selection\.tie_break: .*'log_loss'"),
        ("train.selection.tie_standard_errors", -1, r"tie_standard_errors: .*equal to 0"),
    ],
)
def test_wrong_value_is_named_with_its_full_path(path, value, expected):
    with pytest.raises(ParamsError, match=expected):
        parse_params(with_section(path, value))


def test_invalid_strategy_names_the_list_position():
    raw = minimal()
    raw["train"]["models"]["logreg"]["strategies"] = ["none", "oversample"]
    with pytest.raises(ParamsError, match=r"train\.models\.logreg\.strategies\.1: .*oversample"):
        parse_params(raw)


def test_every_problem_is_reported_at_once():
    raw = with_section("data.simulator.n_customer", 1)
    raw["split"] = {"train_days": "a week"}
    with pytest.raises(ParamsError) as caught:
        parse_params(raw, source="custom.yaml")
    message = str(caught.value)
    assert message.startswith("custom.yaml is invalid (2 problem(s))")
    assert "data.simulator.n_customer: unknown key" in message
    assert "split.train_days:" in message


def test_missing_train_section_is_named():
    with pytest.raises(ParamsError, match=r"train: Field required"):
        parse_params({"data": {"source": "simulator"}})


def test_empty_models_are_rejected():
    with pytest.raises(ParamsError, match=r"train: .*models is empty"):
        parse_params({"train": {"models": {}}})


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ({"kind": "decision_tree", "grid": {"max_depth": []}}, r"grid\.max_depth is an empty list"),
        (
            {"kind": "decision_tree", "params": {"max_depth": 2}, "grid": {"max_depth": [3]}},
            r"'max_depth' is in both params and grid",
        ),
        ({"kind": "dummy", "strategies": []}, r"strategies is empty"),
        ({"kind": "svm"}, r"train\.models\.m\.kind: .*'svm'"),
    ],
)
def test_unusable_model_entry_names_the_model(model, expected):
    with pytest.raises(ParamsError, match=expected) as caught:
        parse_params({"train": {"models": {"m": model}}})
    assert "train.models.m" in str(caught.value)


def test_none_and_non_mapping_are_rejected_with_the_source_name():
    with pytest.raises(ParamsError, match=r"^my\.yaml is empty"):
        parse_params(None, source="my.yaml")
    with pytest.raises(ParamsError, match=r"^my\.yaml must be a mapping of sections, got list"):
        parse_params(["train"], source="my.yaml")  # type: ignore[arg-type]


# ------------------------------------------------------------------- load_params


def test_load_params_reads_a_valid_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "train:\n"
        "  models:\n"
        "    tree:\n"
        "      kind: decision_tree\n"
        "      grid: {max_depth: [2, null]}\n"
        "split:\n"
        "  train_start: 2018-05-01\n",
        encoding="utf-8",
    )
    params = load_params(path)
    assert isinstance(params, Params)
    assert params.train.models["tree"].grid == {"max_depth": [2, None]}
    assert params.split.train_start == dt.date(2018, 5, 1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", r"params\.yaml is empty"),
        ("# only a comment\n", r"params\.yaml is empty"),
        ("- train\n- data\n", r"params\.yaml must be a mapping of sections, got list"),
        ("just a sentence\n", r"params\.yaml must be a mapping of sections, got str"),
        ("train: [unclosed\n", r"params\.yaml is not valid YAML"),
        ("train:\n  models: {m: {kind: dummy}}\n\tbad: tab\n", r"params\.yaml is not valid YAML"),
        (
            "train:\n  models: {m: {kind: dummy}}\ndata:\n  simulator:\n    n_customer: 5\n",
            r"data\.simulator\.n_customer: unknown key",
        ),
        (
            "train:\n  models: {m: {kind: dummy}}\ndata:\n  simulator:\n    n_customers: many\n",
            r"data\.simulator\.n_customers: .*'many'",
        ),
    ],
)
def test_load_params_file_errors(tmp_path, text, expected):
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ParamsError, match=expected) as caught:
        load_params(path)
    assert str(path) in str(caught.value)


def test_load_params_missing_file(tmp_path):
    path = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ParamsError, match=r"params\.yaml not found"):
        load_params(path)


# ------------------------------------------------- one default for every setting


def _disagreements(section: type[pydantic.BaseModel], raw: Any, prefix: str) -> list[str]:
    """Keys whose default in params.py differs from params.yaml, or that the file lacks."""
    if not isinstance(raw, dict):
        return [f"{prefix.rstrip('.')}: not a section in params.yaml"]
    problems = []
    for name, field in section.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if name not in raw:
            problems.append(f"{key}: missing from params.yaml")
        elif isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
            problems += _disagreements(annotation, raw[name], f"{key}.")
        elif not field.is_required() and annotation is not None:
            default = field.get_default(call_default_factory=True)
            written = pydantic.TypeAdapter(annotation).validate_python(raw[name])
            if written != default:
                problems.append(f"{key}: params.py says {default!r}, params.yaml {written!r}")
    return problems


def test_params_yaml_and_the_loader_defaults_agree():
    """Each setting has one default: the loader's (what a key left out gets) is the file's,
    and the file lists every key, so what a user reads is what runs."""
    raw = YAML(typ="safe", pure=True).load(REPO_PARAMS.read_text())
    assert _disagreements(Params, raw, "") == []


def test_the_agreement_check_finds_a_disagreement():
    raw = YAML(typ="safe", pure=True).load(REPO_PARAMS.read_text())
    raw["split"]["train_days"] = 9
    del raw["monitor"]["min_rows"]
    assert _disagreements(Params, raw, "") == [
        "split.train_days: params.py says 7, params.yaml 9",
        "monitor.min_rows: missing from params.yaml",
    ]


# ------------------------------------------------- YAML reads values as the user meant


def _load(tmp_path: Path, text: str) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  models: {m: {kind: dummy}}\n" + text, encoding="utf-8")
    return load_params(path)


@pytest.mark.parametrize("word", ["Yes", "No", "yes", "on", "Off", "y", "NO"])
def test_yes_no_on_off_are_the_text_written(tmp_path, word):
    """YAML 1.1 (PyYAML) reads these as booleans: `positive_label: Yes` arrived as True,
    then as 1, and the data stage said the column holds no 1."""
    params = _load(tmp_path, f"data:\n  csv:\n    positive_label: {word}\n")
    assert params.data.csv.positive_label == word


def test_true_stays_a_boolean_for_a_column_of_booleans(tmp_path):
    params = _load(tmp_path, "data:\n  csv:\n    positive_label: true\n")
    assert params.data.csv.positive_label is True


def test_exponents_are_numbers(tmp_path):
    text = "  models:\n    boost: {kind: xgboost, params: {learning_rate: 1e-3, reg_alpha: 5E2}}\n"
    path = tmp_path / "params.yaml"
    path.write_text("train:\n" + text, encoding="utf-8")
    model = load_params(path).train.models["boost"]
    assert model.params == {"learning_rate": 0.001, "reg_alpha": 500.0}


def test_a_key_given_twice_is_an_error_naming_its_line(tmp_path):
    with pytest.raises(ParamsError) as caught:
        _load(tmp_path, "split:\n  train_days: 7\n  train_days: 14\n")
    message = str(caught.value)
    assert 'line 5, column 3: found duplicate key "train_days"' in message
    assert "keep one of them" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "data:\n  csv:\n    target: 2018\n",
            "data.csv.target: takes text, but YAML read 2018 as a number; if you meant the "
            'text, quote it: target: "2018"',
        ),
        (
            "data:\n  csv:\n    time_column: 2020-01-31\n",
            "data.csv.time_column: takes text, but YAML read 2020-01-31 as a date; if you "
            'meant the text, quote it: time_column: "2020-01-31"',
        ),
        (
            "data:\n  csv:\n    drop_columns: [id, true]\n",
            "data.csv.drop_columns.1: takes text, but YAML read true as a boolean; if you "
            'meant the text, quote it: "true"',
        ),
        (
            "data:\n  csv:\n    path:\n",
            "data.csv.path: needs a value (YAML read an empty value or null)",
        ),
    ],
)
def test_text_that_yaml_typed_is_refused_with_how_to_quote_it(tmp_path, text, expected):
    with pytest.raises(ParamsError) as caught:
        _load(tmp_path, text)
    assert f"  - {expected}" in str(caught.value).splitlines()
