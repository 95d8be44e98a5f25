"""bench/election.py measures what it claims (a short run of it)."""

from bench.election import main, run_classic, run_gholipour


def test_one_crash_each_way():
    for n in (3, 5):
        ours, took = run_gholipour(n, seed=1)
        classic, _ = run_classic(n, seed=1)
        assert 0 < ours <= 2 * n - 3
        assert classic > ours
        assert took < 1.5


def test_prints_name_value_lines(capsys):
    main(["--trials", "1", "--sizes", "3"])
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    names = [line.split(":")[0] for line in lines]
    assert names == [
        "messages_gholipour_n3", "messages_gholipour_n3_max", "election_time_gholipour_n3_s",
        "messages_classic_n3", "messages_classic_n3_max", "election_time_classic_n3_s",
        "bound_2n_minus_3_n3",
    ]
    assert all(float(line.split(": ")[1]) >= 0 for line in lines)
