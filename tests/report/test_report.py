import json

from test_evaluation import _res

from hf_taskgroup.grouping import Grouping
from hf_taskgroup.report.evaluation import evaluate_groupings, group_name
from hf_taskgroup.report.render import write_report


def test_report_files_tables_and_flags(tmp_path):
    stl = {"a": 0.7, "b": 0.6}
    results = {group_name([t]): {0: _res([t], stl)} for t in stl}
    results[group_name(["a", "b"])] = {0: _res(["a", "b"], {"a": 0.75, "b": 0.5})}
    g = Grouping(groups=[["a", "b"]], method="all_in_one", tasks=["a", "b"], params={}, scores={})
    ev = evaluate_groupings({"all_in_one": g}, results)
    paths = write_report(tmp_path, ev, config={"suite_name": "s", "tasks": ["a", "b"]}, primary_method="all_in_one")
    for key in ("gains", "params_vs_score"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "report.md").read_text()
    assert "| b | accuracy | a, b | 0.600 | 0.500 | -0.100 ⚠ negative transfer |" in md
    assert "| a | accuracy | a, b | 0.700 | 0.750 | +0.050 |" in md
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["summary"][0]["tasks_negative"] == 1
    assert data["plots"]["gains"] == "plots/gains.png"
