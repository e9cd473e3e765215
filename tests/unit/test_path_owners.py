from scheduler.path_owners import PathOwners


def test_owners_under_a_deliverable_are_found_by_path_and_by_directory() -> None:
    owners = PathOwners({"app/models.py": "backend", "docs/requirements.md": "requirements"})
    owners.note("frontend", ["frontend/client.py", "app/ui.py"])
    owners.note("qa", ["tests/test_app.py"])
    targets = ["app/", "docs/requirements.md", "tests/"]
    assert owners.others_under(targets, "backend") == (
        ("app/ui.py", "frontend"),
        ("docs/requirements.md", "requirements"),
        ("tests/test_app.py", "qa"),
    )
    # A directory target matches only what is under it, not a sibling sharing its prefix.
    owners.note("devops", ["application.py", "app"])
    assert [p for p, _ in owners.others_under(["app/"], "x")] == ["app/models.py", "app/ui.py"]
    # The latest writer owns a path; the step's own paths are never reported.
    owners.note("backend", ["app/ui.py"])
    assert owners.others_under(["app/"], "backend") == ()
    assert owners.others_under([], "backend") == ()


def test_paths_written_by_some_steps_are_listed_in_order() -> None:
    owners = PathOwners({"b.md": "design", "a/x.py": "build", "a/y.py": "design"})
    owners.note("build", ["a/y.py"])
    assert owners.written_by({"design"}) == ["b.md"]
    assert owners.written_by({"build", "design"}) == ["a/x.py", "a/y.py", "b.md"]
