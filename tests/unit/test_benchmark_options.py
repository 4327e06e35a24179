"""The incident benchmark's options and log reading (the benchmark itself runs by hand: it is
minutes of a whole stack, and its figures go into the README, never into an assertion)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.incident_rotation import Run, host_profile, plan, summarise
from local.stack import LocalStack, spoke_vault_names


def test_defaults_are_the_issues_thousand_and_hundred_secrets_in_ten_vaults_every_way() -> None:
    runs, _ = plan([])
    assert [(r.secrets, r.vaults, r.how, r.max_per_vault) for r in runs] == [
        (1000, 10, "incident", None),
        (1000, 10, "incident", 50),
        (1000, 10, "sweep", None),
        (100, 10, "incident", None),
        (100, 10, "incident", 50),
        (100, 10, "sweep", None),
    ]


def test_options_choose_sizes_ways_and_raised_bounds() -> None:
    runs, args = plan(["--secrets", "20", "--vaults", "3", "--how", "incident-raised", "--raised", "8,4"])
    assert runs == [Run(20, 3, "incident", 8, 4)]
    assert runs[0].label == "incident (raised bounds)"
    assert args.workers == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["--secrets", "0"],
        ["--secrets", "ten"],
        ["--how", "sweep,panic"],
        ["--raised", "51,2"],
        ["--raised", "4"],
        ["--vaults", "1"],
    ],
)
def test_bad_options_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        plan(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_stack_has_at_least_the_default_topologys_two_spoke_vaults(tmp_path: Path) -> None:
    assert spoke_vault_names(3) == ("spoke1-kv", "spoke2-kv", "spoke3-kv")
    with pytest.raises(ValueError, match="at least 2 spoke vaults"):
        LocalStack(tmp_path, spoke_vaults=1)


def test_host_log_lines_give_times_per_activity_and_orchestrator() -> None:
    log = "\n".join(
        [
            "INFO activity plan_rotation [rotate_x task 0] succeeded (12.5 ms)",
            "INFO activity plan_rotation [rotate_y task 0] failed (7.5 ms)",
            "INFO episode rotate_secret [rotate_x] delivered 1, scheduled 1, now Running (3.0 ms)",
            "INFO something else entirely",
        ]
    )
    assert host_profile(log) == {
        "activities": {"plan_rotation": [12.5, 7.5]},
        "episodes": {"rotate_secret": [3.0]},
    }


def test_sampled_stacks_are_ranked_by_the_share_passing_through_each_function(tmp_path: Path) -> None:
    sampled = tmp_path / "host.txt"
    sampled.write_text("main (a.py:1);work (b.py:2);parse (c.py:3) 3\nmain (a.py:1);idle (d.py:9) 1\n")
    assert summarise(sampled) == [
        ("main (a.py)", "100%"),
        ("parse (c.py)", "75%"),
        ("work (b.py)", "75%"),
        ("idle (d.py)", "25%"),
    ]
