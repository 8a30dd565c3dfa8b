"""Every Python block of the README runs, in order, in one namespace (as a reader pasting them would);
a block that starts with `# needs: FILES` runs when those files exist and is otherwise compiled only."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    ran = 0
    for i, block in enumerate(blocks):
        code = compile(block, f"README.md python block {i + 1}", "exec")
        first = block.splitlines()[0]
        if first.startswith("# needs:"):
            files = [f.split("(")[0].strip() for f in re.split(r",(?![^(]*\))", first[len("# needs:"):])]
            if not all(Path(f).exists() for f in files if f):
                continue
        exec(code, namespace)
        ran += 1
    assert ran >= 2 and "images" in namespace and tuple(namespace["images"].shape) == (2, 3, 32, 32)


def test_readme_blocks_are_found():
    blocks = python_blocks("text\n```python\nx = 1\n```\nmore\n```python\n# needs: a.pt\ny = 2\n```\n")
    assert blocks == ["x = 1\n", "# needs: a.pt\ny = 2\n"]
