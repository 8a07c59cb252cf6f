"""End to end in headless Chromium: the web page predicts from uploaded files and typed text, and
the HTML report's plots render. Needs Debian's `chromium` + `chromium-driver` and selenium
(`.ci/run` installs them and sets MMFIT_REQUIRE_BROWSER=1, so there a missing browser fails).

MMFIT_BROWSER_RUN=RUN uses an existing run (e.g. the demo's) instead of a tiny one, and
MMFIT_SCREENSHOT_DIR=docs saves the page's screenshot there."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import make_dataset, tiny_config
from mmfit import Predictor, api
from mmfit.config import load_config
from mmfit.data.manifest import data_root, read_manifest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _need_browser():
    missing = [n for n, ok in (("chromium", CHROMIUM), ("chromedriver", DRIVER)) if not ok]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        msg = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
        if os.environ.get("MMFIT_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(a)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if os.environ.get("MMFIT_BROWSER_RUN"):
        return Path(os.environ["MMFIT_BROWSER_RUN"])
    from rich.console import Console

    tmp = tmp_path_factory.mktemp("browser")
    manifest = make_dataset(tmp / "data")
    return api.train(tiny_config(manifest, tmp, train__epochs=2), run_dir=tmp / "run", console=Console(quiet=True))


@pytest.fixture(scope="module")
def server(run, browser):
    import uvicorn

    from mmfit.deploy.server import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(run), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def _example(run: Path) -> dict:
    """The first test-like row of the run's own manifest: file columns as absolute paths."""
    cfg = load_config(run / "config.yaml")
    df = read_manifest(cfg.data.manifest)
    root = data_root(cfg.data)
    row = df.iloc[len(df) - 1]
    out = {}
    for col, c in cfg.data.columns.items():
        v = row[col]
        if v is None or (isinstance(v, float) and v != v) or str(v) == "":
            continue
        out[col] = str((root / str(v)).resolve()) if c.role in ("image", "audio") else str(v)
    return out


def test_web_page_predicts_from_files_and_text(server, browser, run):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    example = _example(run)
    assert any(Path(v).exists() for v in example.values() if v.startswith("/")), example
    for col, value in example.items():
        field = browser.find_element(By.ID, f"input-{col}")
        field.send_keys(value)  # file inputs take a path; text fields take the text
    browser.find_element(By.ID, "predict").click()
    task = next(iter(load_config(run / "config.yaml").data.targets))
    label = wait.until(EC.visibility_of_element_located((By.ID, f"label-{task}")))
    pred = Predictor.load(run)
    classes = pred.pre.targets[task].classes
    assert label.text in classes, label.text
    bars = browser.find_elements(By.CSS_SELECTOR, "#result .bar")
    assert len(bars) >= len(classes)  # probability bars (and modality bars)
    expl = browser.find_element(By.ID, "explanation")
    assert all(m in expl.text for m in pred.model.modalities), expl.text
    att = browser.find_element(By.ID, "attribution")  # integrated gradients: heat maps and shaded tokens
    files = [c for c, cc in load_config(run / "config.yaml").data.columns.items() if cc.role in ("image", "audio")]
    assert all(browser.find_element(By.ID, f"map-{c}").size["width"] > 0 for c in files)
    assert att.find_elements(By.CSS_SELECTOR, "span")  # the text's tokens
    assert not browser.find_elements(By.ID, "error")
    shot = Path(os.environ.get("MMFIT_SCREENSHOT_DIR") or run) / "web-page.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_web_page_shows_a_bad_file_as_an_error(server, browser, run, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    browser.get(server + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    cfg = load_config(run / "config.yaml")
    image_col = next(c for c, cc in cfg.data.columns.items() if cc.role == "image")
    browser.find_element(By.ID, f"input-{image_col}").send_keys(str(bad))
    browser.find_element(By.ID, "predict").click()
    err = wait.until(EC.visibility_of_element_located((By.ID, "error")))
    assert "422" in err.text and "image" in err.text


def test_report_opens_with_its_plots(run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    path = api.report(run, tmp_path / "report.html")
    browser.get(path.resolve().as_uri())
    imgs = browser.find_elements(By.TAG_NAME, "img")
    assert len(imgs) >= 5  # curves (2), confusion, per-class F1, reliability, ablation
    for img in imgs:
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 100", img), \
            img.get_attribute("alt")
    text = browser.find_element(By.TAG_NAME, "body").text
    for section in ("Test metrics", "Training curves", "Modality ablation", "Model card", "Limitations",
                    "Intended use", "reliability"):
        assert section in text, section
