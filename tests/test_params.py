"""params: the typed params and params.yaml agree; bad values name the param."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from capsearch.params import (
    SECTIONS,
    CaptionParams,
    FusionParams,
    ParamError,
    RuntimeParams,
    SubsetParams,
    default_params,
    load_raw,
    read_key,
    read_section,
)

PROJECT = Path(__file__).resolve().parents[1]


def test_params_yaml_is_the_typed_defaults():
    assert yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8")) == default_params()


def test_every_section_of_params_yaml_reads_back():
    raw = load_raw(PROJECT / "params.yaml")
    for cls in SECTIONS.values():
        assert read_section(raw, cls) == cls()


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        (
            SubsetParams,
            {"split": "test", "num_images": 5, "seed": "abc"},
            "subset.seed: expected an integer, got 'abc'",
        ),
        (SubsetParams, {"split": "test", "num_images": 2.5, "seed": 0}, "subset.num_images: expected a positive"),
        (SubsetParams, {"split": "test", "num_images": True, "seed": 0}, "subset.num_images: expected a positive"),
        (SubsetParams, {"split": "test", "seed": 0}, "params.yaml: subset.num_images missing"),
        (SubsetParams, {"split": "test", "num_images": 5, "seed": 0, "size": 3}, "subset.size: unknown param"),
        (FusionParams, {"split": "dev", "num_images": 5, "seed": 0, "alphas": [0.5, 1.5]}, "fusion.alphas: every"),
        (FusionParams, {"split": "dev", "num_images": 5, "seed": 0, "alphas": []}, "fusion.alphas: expected a non"),
        (FusionParams, {"split": "dev", "num_images": -3, "seed": 0, "alphas": [0.5]}, "fusion.num_images: expected"),
        (CaptionParams, {**CaptionParams().as_yaml(), "num_beams": "3"}, "caption.num_beams: expected an integer"),
        (RuntimeParams, {"batch_size": {"captions": 4}}, "runtime.batch_size.captions: unknown task"),
        (RuntimeParams, {"num_workers": "many"}, "runtime.num_workers: expected 0 or more, or 'auto', got 'many'"),
    ],
)
def test_bad_values_name_the_param(section, values, message):
    with pytest.raises(ParamError) as error:
        section.from_mapping(values)
    assert str(error.value).startswith(message), str(error.value)


def test_values_are_normalised():
    assert SubsetParams.from_mapping({"split": "all", "num_images": "ALL", "seed": 1}).count is None
    assert FusionParams(alphas=[1, 0]).alphas == (1.0, 0.0)
    assert RuntimeParams(batch_size={"caption": 4}).batch_size == {
        "caption": 4,
        "embed_images": "auto",
        "embed_texts": "auto",
    }
    assert read_section({}, RuntimeParams) == RuntimeParams()  # runtime may be left out entirely
    assert read_key({"subset": {"split": "dev"}}, "subset.split") == "dev"
    with pytest.raises(ParamError, match=r"subset\.split: unknown split 'val'"):
        read_key({"subset": {"split": "val"}}, "subset.split")


def test_an_unknown_section_is_refused_with_the_known_ones(tmp_path):
    params = tmp_path / "params.yaml"
    raw = default_params()
    raw["captoin"] = raw["caption"]
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ParamError) as error:
        load_raw(params)
    top = ", ".join(dict.fromkeys(name.split(".")[0] for name in SECTIONS))  # finetune.clip is under finetune
    assert str(error.value) == f"{params}: unknown section 'captoin'; the sections are {top}"
    assert "finetune, runtime" in str(error.value)
    raw.pop("captoin")
    raw["finetune"]["captoiner"] = {"epochs": 1}
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    with pytest.raises(ParamError, match=r"^finetune.captoiner: unknown section; finetune has clip, captioner$"):
        load_raw(params)


def test_malformed_yaml_and_a_list_are_one_line_naming_the_file(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("caption:\n  model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ParamError) as error:
        load_raw(params)
    assert str(error.value) == f"{params}:3:1: not valid YAML (did not find expected ',' or ']')"
    params.write_text("- caption\n", encoding="utf-8")
    with pytest.raises(ParamError, match=rf"^{params}: expected a mapping of sections$"):
        load_raw(params)


# Every float param, each set in a form a person or DVC writes (DVC writes `-S x=1e-5` back as `1e-05`).
FLOAT_FORMS = {
    "finetune.clip.learning_rate": ("1e-5", 1e-5),
    "finetune.clip.weight_decay": ("5e-05", 5e-5),
    "finetune.captioner.learning_rate": ("1E-3", 1e-3),
    "finetune.captioner.weight_decay": (".5", 0.5),
    "fusion.alphas": ("[0, .25, 1e-1, 1.0e+0, 5E-1]", (0.0, 0.25, 0.1, 1.0, 0.5)),
}


def test_every_float_form_reads_as_a_number(tmp_path):
    params = tmp_path / "params.yaml"
    text = (PROJECT / "params.yaml").read_text(encoding="utf-8")
    text = text.replace("learning_rate: 1.0e-05", "learning_rate: 1e-5")
    text = text.replace("weight_decay: 0.1", "weight_decay: 1E+2")
    params.write_text(text, encoding="utf-8")
    raw = load_raw(params)
    assert raw["finetune"]["clip"]["learning_rate"] == 1e-5 and raw["finetune"]["clip"]["weight_decay"] == 100.0
    assert read_section(raw, SECTIONS["finetune.captioner"]).learning_rate == 1e-5
    assert raw["subset"]["num_images"] == 1000 and raw["runtime"]["ray_stall_seconds"] == 600  # integers stay
    assert raw["fetch"]["images_md5"] == "f18a1e2920de5bd84dae7cf08ec78978"  # strings stay


def test_float_params_set_through_dvc_exp_run_are_numbers(tmp_path):
    """`dvc exp run -S` writes params.yaml with ruamel (YAML 1.2); every stage reads what it wrote as numbers."""
    import json
    import shutil
    import sys

    from capsearch.demo.workspace import run_dvc, run_tool

    shutil.copy(PROJECT / "params.yaml", tmp_path / "params.yaml")
    reader = (
        "import json; from capsearch.params import SECTIONS, load_raw, read_section; raw = load_raw(); "
        "json.dump({n: getattr(read_section(raw, SECTIONS[n.rsplit('.', 1)[0]]), n.rsplit('.', 1)[1]) "
        f"for n in {sorted(FLOAT_FORMS)!r}}}, open('read.json', 'w'))"
    )
    stage = {"cmd": f'"{sys.executable}" -c "{reader}"', "params": ["finetune", "fusion"], "outs": ["read.json"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"read": stage}}), encoding="utf-8")
    run_tool(["git", "init", "-q"], tmp_path)
    run_dvc(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("/read.json\n", encoding="utf-8")
    run_tool(["git", "add", "-A"], tmp_path)
    run_tool(["git", "commit", "-qm", "params"], tmp_path)
    sets = [arg for name, (form, _) in FLOAT_FORMS.items() for arg in ("-S", f"{name}={form}")]
    run_dvc(tmp_path, "exp", "run", *sets)
    read = json.loads((tmp_path / "read.json").read_text(encoding="utf-8"))
    expected = {name: list(value) if isinstance(value, tuple) else value for name, (_, value) in FLOAT_FORMS.items()}
    assert read == expected
    assert "1e-05" in (tmp_path / "params.yaml").read_text(encoding="utf-8")  # the form DVC writes, read as 1e-5
