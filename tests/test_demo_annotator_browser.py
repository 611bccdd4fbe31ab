"""The annotator conveniences in a real headless Chromium (the pattern and helpers of
tests/test_demo_browser.py): arrow-key nudge, accept what is on screen / the whole image, per-image
progress in the worklist, N/P to the next unfinished image, the selected point's number at full view,
the undo limit on the page, the image in its own format, COCO export then import from the page, and
the error detector: "Check first" by its scores, Auto-fix by key and button, undone by Undo.
"""
from __future__ import annotations

import json
import numpy as np

from tests.test_demo_browser import (browser, chromium_path, downloaded, grabbable_point, key,  # noqa: F401
                                     open_page, predictor, serve, state)


def progress(chrome) -> dict[str, str]:
    return chrome.evaluate("Object.fromEntries([...document.querySelectorAll('#worklist li')].map(li => "
                           "[li.dataset.name, li.querySelector('.progress').textContent]))")


def test_annotator_conveniences_in_a_real_browser(browser, predictor, tmp_path):  # noqa: F811
    import cv2

    from dataset.synthetic import make_sample
    from demo.server import DemoApp
    from demo.store import STORE_NAME, AnnotationStore
    from demo.worklist import Worklist

    chrome = browser
    images = tmp_path / "xrays"
    images.mkdir()
    for index in range(3):
        sample = make_sample(0, "test", 20 + index, scale=0.5)
        cv2.imwrite(str(images / sample.name), sample.image)
    names = sorted(p.name for p in images.iterdir())
    store = AnnotationStore(images / STORE_NAME)
    server = serve(DemoApp(predictor, worklist=Worklist(images), store=store))
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    try:
        chrome.browser_call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        chrome.call("Runtime.enable")
        chrome.call("Page.enable")
        open_page(chrome, server.url)
        assert state(chrome)["name"] == names[0]
        chrome.wait_for("document.querySelector('#worklist li .progress').textContent === '0/68'",
                        "the progress of the open image")
        assert progress(chrome) == {names[0]: "0/68", names[1]: "", names[2]: ""}
        assert "198 actions" in chrome.evaluate("document.getElementById('undo-limit').textContent")
        # no error detector: "Check first" by confidence, Auto-fix disabled and saying why
        assert [int(i) for i in chrome.evaluate("[...document.querySelectorAll('#worst li')].map(li => "
                                                "li.dataset.index)")] == state(chrome)["least_confident"]
        assert "confidence" in chrome.evaluate("document.getElementById('check-first-by').textContent")
        assert chrome.evaluate("document.getElementById('auto-fix').disabled")
        assert "--detector" in chrome.evaluate("document.getElementById('auto-fix').title")
        # the X-ray reached the page as its own JPEG file
        served = chrome.evaluate("fetch(window.demoState().image_url).then(r => r.headers.get('Content-Type'))")
        assert served == "image/jpeg"

        # select a point: its number shows at full view (the others are too crowded), at 14 screen px
        index, at = grabbable_point(chrome, 30)
        chrome.click(*at)
        chrome.wait_for(f"document.getElementById('kp-{index}').classList.contains('selected')", "the selection")
        shown = chrome.evaluate("[...document.querySelectorAll('#numbers text')].filter(t => "
                                "getComputedStyle(t).display !== 'none' && getComputedStyle(t.parentNode).display "
                                "!== 'none').map(t => t.textContent)")
        assert shown == [str(index)]
        height = chrome.evaluate(f"document.getElementById('num-{index}').getBoundingClientRect().height")
        assert 10 <= height <= 24, height

        # arrow keys nudge it by one screen pixel (Shift: ten); it is fixed there and stays selected
        units = chrome.evaluate("1 / document.getElementById('canvas').getScreenCTM().a")
        before = state(chrome)["points"][index]
        refines = chrome.evaluate("window.demoStats.refines")
        key(chrome, "ArrowRight", "ArrowRight", 39)
        chrome.wait_for(f"window.demoStats.refines > {refines} && '{index}' in window.demoState().fixed",
                        "the nudge right")
        refines = chrome.evaluate("window.demoStats.refines")
        key(chrome, "ArrowDown", "ArrowDown", 40, modifiers=8)
        chrome.wait_for(f"window.demoStats.refines > {refines} && !document.body.classList.contains('busy')",
                        "the nudge down")
        after = state(chrome)["fixed"][str(index)]
        assert np.allclose(np.subtract(after, before), [units, 10 * units], rtol=1e-9, atol=1e-9)
        assert state(chrome)["points"][index] == after
        assert chrome.evaluate(f"document.getElementById('kp-{index}').classList.contains('selected')")
        key(chrome, "Escape", "Escape", 27)

        # zoom in, Shift+A: exactly the points whose dots are inside the viewer become checked
        for _ in range(3):
            chrome.call("Input.dispatchMouseEvent", type="mouseWheel", x=700, y=450, deltaX=0, deltaY=-400)
        chrome.wait_for("document.getElementById('canvas').viewBox.baseVal.height < "
                        "window.demoState().height / 2", "the zoom")
        on_screen = chrome.evaluate("""(() => { const v = document.getElementById('canvas').getBoundingClientRect();
            return [...Array(68).keys()].filter(i => { const r = document.getElementById('kp-' + i)
              .getBoundingClientRect(); const x = r.x + r.width / 2, y = r.y + r.height / 2;
              return x >= v.left && x <= v.right && y >= v.top && y <= v.bottom; }); })()""")
        assert 0 < len(on_screen) < 60
        key(chrome, "A", "KeyA", 65, modifiers=8)
        expected = sorted(set(on_screen) | {index})
        chrome.wait_for(f"Object.keys(window.demoState().fixed).length === {len(expected)}", "accept on screen")
        assert sorted(map(int, state(chrome)["fixed"])) == expected
        chrome.wait_for(f"document.querySelector('#worklist li .progress').textContent === '{len(expected)}/68'",
                        "the progress after accepting")
        checked = state(chrome)
        chrome.evaluate("document.getElementById('accept-all').click()")
        chrome.wait_for("Object.keys(window.demoState().fixed).length === 68", "accept all")
        assert state(chrome)["points"] == checked["points"], "accepting moved points"
        chrome.wait_for("document.querySelector('#worklist li .progress').textContent === '68/68'", "68/68")

        # COCO out through the page; then an edit, and the file back in: the exported points again
        chrome.evaluate("document.getElementById('export-coco').click()")
        coco_path = downloaded(downloads, ".json")
        coco = json.loads(coco_path.read_text())
        assert [i["file_name"] for i in coco["images"]] == [names[0]]
        chrome.evaluate("document.getElementById('undo').click()")
        chrome.wait_for("Object.keys(window.demoState().fixed).length < 68", "the undo")
        root = chrome.call("DOM.getDocument")["root"]["nodeId"]
        node = chrome.call("DOM.querySelector", nodeId=root, selector="#import-coco")["nodeId"]
        chrome.call("DOM.setFileInputFiles", nodeId=node, files=[str(coco_path)])
        chrome.wait_for("document.getElementById('status').textContent.startsWith('Imported')", "the import")
        imported = state(chrome)
        assert imported["points"] == checked["points"] and len(imported["fixed"]) == 68
        assert imported["action"] == "import"

        # N and P go to the next / previous image not marked done
        key(chrome, "d", "KeyD", 68)
        chrome.wait_for("window.demoState().done", "done")
        key(chrome, "n", "KeyN", 78)
        chrome.wait_for(f"window.demoState().name === {json.dumps(names[1])}", "the next image")
        key(chrome, "d", "KeyD", 68)
        chrome.wait_for("document.querySelectorAll('#worklist li .badge.done').length === 2", "two done")
        key(chrome, "p", "KeyP", 80)  # names[0] is done: nothing before is left to do
        chrome.wait_for("document.getElementById('status').textContent.startsWith('No image before')", "no previous")
        assert state(chrome)["name"] == names[1]
        key(chrome, "n", "KeyN", 78)
        chrome.wait_for(f"window.demoState().name === {json.dumps(names[2])}", "the image after")
        errors = chrome.page_exceptions()
        assert errors == [], errors
    finally:
        server.shutdown()
        server.server_close()
        store.close()


# --------------------------------------------------------------------------------------------------
# the error detector: "Check first" by its scores, Auto-fix by key and button, undone by Undo
# --------------------------------------------------------------------------------------------------
def shown_check_first(chrome) -> list[int]:
    return chrome.evaluate("[...document.querySelectorAll('#worst li')].map(li => Number(li.dataset.index))")


def suggested_on_page(chrome) -> list[int]:
    return chrome.evaluate("[...document.querySelectorAll('#points circle.suggested')]"
                           ".map(c => Number(c.dataset.index)).sort((a, b) => a - b)")


def test_error_detector_check_first_and_auto_fix_in_a_real_browser(browser, predictor, tmp_path):  # noqa: F811
    import cv2

    from dataset.synthetic import make_sample
    from demo.detector import PointChecker
    from demo.server import DemoApp
    from demo.store import STORE_NAME, AnnotationStore
    from demo.worklist import Worklist
    from tests.test_demo_autofix import detector_checkpoint

    chrome = browser
    checker = PointChecker.from_checkpoint(detector_checkpoint(tmp_path / "error_detector.pth", predictor.size_rc),
                                           predictor)
    images = tmp_path / "xrays"
    images.mkdir()
    sample = make_sample(0, "test", 24, scale=0.5)
    cv2.imwrite(str(images / sample.name), sample.image)
    store = AnnotationStore(images / STORE_NAME)
    server = serve(DemoApp(predictor, worklist=Worklist(images), store=store, checker=checker))
    try:
        chrome.call("Runtime.enable")
        chrome.call("Page.enable")
        open_page(chrome, server.url)
        first = state(chrome)
        scores = np.array(first["error_scores"])
        by_score = np.argsort(-scores, kind="stable")[:5].tolist()  # nothing fixed yet
        assert shown_check_first(chrome) == by_score
        assert "error detector" in chrome.evaluate("document.getElementById('check-first-by').textContent")
        rings = chrome.evaluate("[...document.querySelectorAll('.worst-mark')].filter(c => c.style.display !== "
                                "'none').map(c => [Number(c.getAttribute('cx')), Number(c.getAttribute('cy'))])")
        assert np.allclose(rings, np.array(first["points"])[by_score])
        assert not chrome.evaluate("document.getElementById('auto-fix').disabled")

        # the key X: one automatic round; the moved points are suggestions (drawn so), not fixed
        key(chrome, "x", "KeyX", 88)
        chrome.wait_for("window.demoState().action === 'autofix' && !document.body.classList.contains('busy')",
                        "the auto-fix by key")
        fixed_once = state(chrome)
        assert fixed_once["points"] != first["points"] and fixed_once["fixed"] == {}
        assert len(fixed_once["suggested"]) == 4 and suggested_on_page(chrome) == sorted(fixed_once["suggested"])
        scores = np.array(fixed_once["error_scores"])
        assert shown_check_first(chrome) == np.argsort(-scores, kind="stable")[:5].tolist()
        assert chrome.evaluate("document.getElementById('status').textContent.startsWith('Auto-fix suggests')")

        # Undo brings the points back exactly, with no suggestion left
        chrome.evaluate("document.getElementById('undo').click()")
        chrome.wait_for("window.demoState().action !== 'autofix'", "the undo of the auto-fix")
        undone = state(chrome)
        assert undone["points"] == first["points"] and undone["suggested"] == [] and suggested_on_page(chrome) == []
        assert shown_check_first(chrome) == by_score

        # the button does the same
        chrome.evaluate("document.getElementById('auto-fix').click()")
        chrome.wait_for("window.demoState().action === 'autofix' && !document.body.classList.contains('busy')",
                        "the auto-fix by button")
        fixed_twice = state(chrome)
        assert fixed_twice["points"] == fixed_once["points"], "one round from the same state is deterministic"
        assert suggested_on_page(chrome) == sorted(fixed_twice["suggested"])
        key(chrome, "z", "KeyZ", 90, modifiers=2)
        chrome.wait_for("window.demoState().action !== 'autofix'", "Ctrl+Z after the auto-fix")
        assert state(chrome)["points"] == first["points"] and suggested_on_page(chrome) == []
        errors = chrome.page_exceptions()
        assert errors == [], errors
    finally:
        server.shutdown()
        server.server_close()
        store.close()
