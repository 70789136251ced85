"""`lawful md`'s summary line under a thermostat does not call its total-energy slope a drift that
measures energy conservation (first-hour audit: the NVT line printed the slope as heat exchanged
with the bath, then "the drift measures energy conservation" on the next line)."""

from lawful.integrations.cli import main


def test_nvt_summary_does_not_call_the_slope_a_conservation_measure(tmp_path, capsys):
    assert main(["md", "--model", "cu-emt", "--ensemble", "nvt", "--repeat", "2", "--steps", "10",
                 "--report-interval", "5", "--out", str(tmp_path / "nvt")]) == 0
    out = capsys.readouterr().out
    assert "total-energy slope" in out and "model accuracy" in out
    assert "the drift measures energy conservation" not in out
