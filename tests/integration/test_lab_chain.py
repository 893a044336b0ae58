"""The whole GD-REC chain in-process on a tiny synthetic dataset (users.dat format): every stage runs and the
table has the rows the paper compares."""


from data_owner.gan import CGANConfig
from experiments.lab import ChainConfig, render, run_chain
from tests.conftest import write_users_dat


def test_chain_runs_end_to_end(tmp_path):
    data = tmp_path / "users.dat"
    write_users_dat(data)
    config = ChainConfig(
        dataset=str(data), family="bpr", fraction=0.5, list_length=8, teacher_epochs=20, gd_epochs=10,
        student_epochs=20, patience=0, eval_every=5, batch_size=128,
        cgan=CGANConfig(hidden_g=(32,), hidden_d=(16,), noise_dim=4, epochs=10, eval_every=5, batch_size=16,
                        g_steps=1, d_steps=1),
        teacher={"model": {"dim": 16, "reg": 1e-3}, "lr": 0.02}, device="cpu", progress=False,
    )
    rows, info = run_chain(config)
    names = [row.name for row in rows]
    assert names[0].startswith("Teacher (KD") and names[2].startswith("Teacher (GD")
    assert any(n.startswith("GD student") for n in names) and any(n.startswith("Student (50%") for n in names)
    gd_student = rows[3]
    assert abs(gd_student.params / rows[0].params - 0.5) < 0.01
    for row in rows:
        assert 0.0 <= row.test["HR@50"] <= 1.0
    assert 0.0 <= info["observed_share"] <= 1.0
    table = render(rows, info, config)
    assert "| GD student (50%, data-free)" in table
