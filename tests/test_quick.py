from .conftest import ALICE


def test_smoke(kinto):
    kinto.create_collection()
    url = kinto.record_url()
    r = kinto.upload(url, b"abc", "a.txt", data={"type": "x"})
    print(r.json, r.headers)
    rec = kinto.app.get(url, headers=ALICE).json
    print(rec)
    print(kinto.files())
    r = kinto.upload(url, b"abcd", "b.txt")
    print(kinto.files())
    kinto.app.delete(url + "/attachment", headers=ALICE, status=204)
    print(kinto.files(), kinto.app.get(url, headers=ALICE).json)
