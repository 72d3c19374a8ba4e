"""`dgx data cache --root R` without --manifests takes the manifests whose images lie under R and names the
others (before, it took every manifest in the folder and failed on the first of another source, naming
neither)."""

from __future__ import annotations

import pytest

from dgx.cli.data_cache import _under_root
from dgx.errors import DgxError

HEAD = "image,label,domain,split,patient_id,age,sex,view,abnormality,lung\n"


def test_a_cache_call_takes_the_manifests_of_its_own_root(tmp_path, capsys):
    (tmp_path / "nih" / "images").mkdir(parents=True)
    (tmp_path / "nih" / "images" / "a.png").write_bytes(b"x")
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "chestx-ray8-age.test.csv").write_text(HEAD + "images/a.png,1,chestx-ray8-age,test,p,50,M,PA,,\n")
    (manifests / "chexpert.test.csv").write_text(HEAD + "train/patient1/view1.jpg,0,chexpert,test,p,50,M,PA,,\n")
    found = sorted(manifests.glob("*.csv"))
    assert [p.name for p in _under_root(found, tmp_path / "nih", manifests)] == ["chestx-ray8-age.test.csv"]
    said = capsys.readouterr().err
    assert "left out chexpert.test.csv" in said and "--root THAT_ROOT" in said
    with pytest.raises(DgxError, match=r"no manifest .* under --root .*chexpert.test.csv lists train/patient1"):
        _under_root([manifests / "chexpert.test.csv"], tmp_path / "nih", manifests)
