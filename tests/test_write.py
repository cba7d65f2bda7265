from transforms.write import OUTPUT_DIRS, clear_outputs


def test_clear_outputs_removes_a_previous_runs_folders_only(tmp_path):
    for name in OUTPUT_DIRS:
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "part-00000-of-00003.parquet").write_bytes(b"old")
    (tmp_path / "notes.txt").write_text("mine")
    clear_outputs(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    clear_outputs(str(tmp_path / "never-written"))  # nothing there: nothing to do
