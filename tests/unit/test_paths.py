import pytest

from maestro.paths import MAX_FILE_BYTES, BadPath, check_file_size, normalize_artifact_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("app/main.py", "app/main.py"), ("./docs//a.md", "docs/a.md"), ("a/./b.txt", "a/b.txt")],
)
def test_relative_paths_are_normalised(raw: str, expected: str) -> None:
    assert normalize_artifact_path(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("C:/x", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a\\b", "backslash"),
        ("a\nb", "control"),
        (".", "names no file"),
        ("x" * 300, "longer"),
    ],
)
def test_unsafe_paths_are_rejected_with_the_reason(raw: str, reason: str) -> None:
    with pytest.raises(BadPath, match=reason):
        normalize_artifact_path(raw)


def test_oversized_files_are_rejected() -> None:
    check_file_size("a", MAX_FILE_BYTES)
    with pytest.raises(BadPath, match="limit"):
        check_file_size("a", MAX_FILE_BYTES + 1)
