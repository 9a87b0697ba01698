"""Drive JupyterLab in Debian's chromium: a token-protected server on 127.0.0.1 and a notebook page.

Nothing here downloads a browser or a driver: chromium and chromedriver come from Debian's
``chromium`` and ``chromium-driver`` packages, and Selenium is told where both are.
The page is driven as a learner drives it (the Run menu, the mouse on a slider's handle); its
state is read through ``window.jupyterapp`` (``--LabApp.expose_app_in_browser``), as JupyterLab's
own Galata tests do, and the kernel is asked which widgets the notebook's code created.
"""

from __future__ import annotations

import ast
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build" / "browser"  # screenshots, the served copies of the notebooks, results.json
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1100")
DEBIAN_PACKAGES = "chromium chromium-driver"

# Lab settings for a test run: every cell attached to the DOM (JupyterLab 4 otherwise detaches cells
# out of view), no autosave, no news or update checks.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

# Kernel-side widget views and the CSS class each rendered view carries in the page.
VIEW_CLASSES = {
    "IntSliderView": "widget-slider", "FloatSliderView": "widget-slider", "DropdownView": "widget-dropdown",
    "OutputView": "widget-output", "VBoxView": "widget-vbox", "HBoxView": "widget-hbox", "ButtonView": "widget-button",
    "HTMLView": "widget-html", "ProgressView": "widget-hprogress",  # tqdm's progress bars (cu.train.over_seeds)
}


def browser_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` when both Debian packages are installed, else ``None``."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    return (chromium, chromedriver) if chromium and chromedriver else None


def start_chromium(user_data_dir: Path):
    """A headless chromium with a fresh profile, driven by the system chromedriver."""
    from selenium import webdriver

    paths = browser_paths()
    if paths is None:
        raise RuntimeError(f"chromium and chromedriver are not installed: apt-get install {DEBIAN_PACKAGES}")
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    # Both paths given, so Selenium Manager (which could download a driver) is never consulted.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=paths[1]))
    driver.set_script_timeout(300)  # the kernel answers a question after the work queued before it
    return driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """``jupyter lab`` on 127.0.0.1 with a random token, serving ``root``, with its own config and settings."""

    def __init__(self, root: Path, home: Path, env: dict[str, str] | None = None) -> None:
        self.root, self.home = root, home
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        settings = home / "settings"
        for name, value in LAB_SETTINGS.items():
            (settings / name).parent.mkdir(parents=True, exist_ok=True)
            (settings / name).write_text(json.dumps(value))
        environment = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(home / "config"),
                       "JUPYTER_RUNTIME_DIR": str(home / "runtime"), "IPYTHONDIR": str(home / "ipython")}
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={root}",
                   "--LabApp.expose_app_in_browser=True", f"--LabApp.user_settings_dir={settings}",
                   f"--LabApp.workspaces_dir={home / 'workspaces'}", "--LabApp.news_url=None",
                   "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
                   "--MappingKernelManager.kernel_info_timeout=600"]  # a kernel starts slowly on a busy CPU
        if os.getuid() == 0:
            command.append("--allow-root")
        self.log = (home / "jupyterlab.log").open("w")
        self.process = subprocess.Popen(command, cwd=root, env=environment, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}; see {self.log.name}")
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {timeout:.0f} s; see {self.log.name}")

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(f"{self.url}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every session and its kernel (frees the kernel's memory before the next notebook)."""
        for session in self.api("GET", "/api/sessions"):
            self.api("DELETE", f"/api/sessions/{session['id']}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# JavaScript run in the page. `panel` is the notebook in the main area.
_PANEL = "const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;"  # no app while the page loads
_STATE_JS = _PANEL + """
if (!panel || !panel.content || !panel.sessionContext) { return null; }
const cells = panel.content.widgets;
const errors = [], pending = [];
const outputs = [];
cells.forEach((cell, index) => {
  if (cell.model.type !== 'code') { return; }
  outputs.push(cell.model.outputs.length);
  for (const output of cell.model.outputs.toJSON()) {
    if (output.output_type === 'error') { errors.push({cell: index, ename: output.ename, evalue: output.evalue}); }
  }
  if (cell.model.sharedModel.getSource().trim() && cell.model.executionCount === null) { pending.push(index); }
});
const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
const running = panel.node.querySelectorAll('.jp-InputPrompt').length
  ? Array.from(panel.node.querySelectorAll('.jp-InputPrompt')).filter(p => p.textContent.includes('*')).length : 0;
return {path: panel.context.path, kernel: kernel ? kernel.status : 'none', errors, pending, running, outputs,
        ready: panel.context.isReady && panel.sessionContext.isReady};
"""
_WIDGET_OUTPUTS_JS = _PANEL + """
const live = arguments[0];  // model ids of the widgets the kernel still holds (a closed progress bar is gone)
const mime = 'application/vnd.jupyter.widget-view+json';
const found = [];
panel.content.widgets.forEach((cell, index) => {
  if (cell.model.type !== 'code') { return; }
  const outputs = cell.model.outputs.toJSON();
  const areas = cell.node.querySelectorAll('.jp-OutputArea-child > .jp-OutputArea-output');  // one per output, in order
  const shown = outputs.map((o, i) => [o, areas[i]]).filter(([o]) => o.data && o.data[mime] &&
                                                                    live.includes(o.data[mime].model_id));
  if (!shown.length) { return; }
  const rendered = shown.filter(([, a]) => a && a.querySelector('.jupyter-widgets') &&
                                           !a.textContent.includes('Error displaying widget')).length;
  const loading = shown.filter(([, a]) => a && a.textContent.includes('Loading widget')).length;
  found.push({cell: index, views: shown.length, rendered, loading});
});
return found;
"""
_DUPLICATES_JS = _PANEL + """
const cells = [];
panel.content.widgets.forEach((cell, index) => {
  if (cell.model.type !== 'code') { return; }
  const outputs = cell.model.outputs.toJSON();
  const widget = cell.node.querySelector('.widget-interact') !== null;  // a live explore (not a progress bar)
  const figure = outputs.some(o => o.data && !o.data['application/vnd.jupyter.widget-view+json'] &&
                                   (o.data['image/png'] || o.data['image/svg+xml']));
  if (widget && figure) { cells.push(index); }
});
return cells;
"""
_CENSUS_JS = _PANEL + """
const classes = arguments[0];
const counts = {};
for (const name of classes) { counts[name] = panel.node.querySelectorAll('.' + name).length; }
return counts;
"""
_KERNEL_JS = _PANEL + """
const [expression, done] = arguments;
const kernel = panel.sessionContext.session.kernel;
const future = kernel.requestExecute({code: '', silent: true, store_history: false,
                                       user_expressions: {answer: expression}});
future.onReply = reply => {
  const answer = reply.content.user_expressions.answer;
  done(answer.status === 'ok' ? answer.data['text/plain'] : 'ERROR ' + answer.ename + ': ' + answer.evalue);
};
"""
# What the kernel holds: live widget views by name (closed widgets, e.g. finished progress bars, are gone).
_KERNEL_WIDGETS = ("__import__('json').dumps(__import__('collections').Counter(w._view_name for w in "
                   "list(__import__('ipywidgets').widgets.widget._instances.values()) "
                   "if isinstance(w, __import__('ipywidgets').DOMWidget)))")
_KERNEL_LIVE_IDS = ("__import__('json').dumps(list(__import__('ipywidgets').widgets.widget._instances))")
_SIGNATURE_JS = """
const interact = document.querySelectorAll('.widget-interact')[arguments[0]];
const out = interact.querySelector('.widget-output');
let hash = 0;
const text = out.textContent + Array.from(out.querySelectorAll('img')).map(i => i.src).join('|');
for (let i = 0; i < text.length; i++) { hash = (Math.imul(31, hash) + text.charCodeAt(i)) | 0; }
const failed = Array.from(out.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"]'))
  .map(e => e.textContent).filter(t => t.includes('Traceback') || t.includes('Error'));
return {hash, images: out.querySelectorAll('img').length, chars: out.textContent.length, failed};
"""


class NotebookPage:
    """One notebook opened in JupyterLab, driven through the page."""

    def __init__(self, driver, lab: LabServer, name: str) -> None:
        self.driver, self.lab, self.name = driver, lab, name
        driver.get(f"{lab.url}/lab/tree/{name}?token={lab.token}&reset")
        self._wait(lambda: (s := self.state()) and s["path"] == name and s["ready"] and s["kernel"] == "idle",
                   300, "the notebook and its kernel to be ready")

    def _wait(self, condition, timeout: float, what: str, poll: float = 0.5):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(poll)
        raise TimeoutError(f"{self.name}: waited {timeout:.0f} s for {what}; last state {self.state()}")

    def state(self) -> dict | None:
        return self.driver.execute_script(_STATE_JS)

    def run_all(self, timeout: float) -> dict:
        """Run > Run All Cells, then wait until every cell has run (or one failed) and the kernel is idle."""
        from selenium.webdriver.common.by import By

        menu = next(item for item in self.driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item")
                    if item.text.strip() == "Run")
        menu.click()
        self.driver.find_element(By.CSS_SELECTOR, '.lm-Menu-item[data-command="runmenu:run-all"]').click()

        def finished():
            state = self.state()
            done = state["kernel"] == "idle" and not state["running"] and (state["errors"] or not state["pending"])
            return state if done else None

        self._wait(finished, timeout, "Run All to finish", poll=1.0)
        time.sleep(1.0)  # let the last outputs (widget views) render
        return self._wait(finished, 30, "the kernel to stay idle")

    def widget_outputs(self) -> list[dict]:
        """Per cell with a widget output: how many widget views it displays and how many rendered."""
        answer = self.driver.execute_async_script(_KERNEL_JS, _KERNEL_LIVE_IDS)
        if answer.startswith("ERROR"):
            raise RuntimeError(f"{self.name}: the kernel could not list its widgets: {answer}")
        return self.driver.execute_script(_WIDGET_OUTPUTS_JS, json.loads(ast.literal_eval(answer)))

    def figures_beside_widgets(self) -> list[int]:
        """Cells that show a figure in an output of their own next to a widget (a stale static copy)."""
        return self.driver.execute_script(_DUPLICATES_JS)

    def kernel_widgets(self) -> dict[str, int]:
        """Live widgets the notebook's code created, counted by view name (asked of the kernel)."""
        answer = self.driver.execute_async_script(_KERNEL_JS, _KERNEL_WIDGETS)
        if answer.startswith("ERROR"):
            raise RuntimeError(f"{self.name}: the kernel could not list its widgets: {answer}")
        return json.loads(ast.literal_eval(answer))  # the repr of a str holding JSON

    def page_widgets(self, classes: list[str]) -> dict[str, int]:
        return self.driver.execute_script(_CENSUS_JS, classes)

    def interacts(self):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, ".widget-interact")

    def output_signature(self, interact_index: int) -> dict:
        return self.driver.execute_script(_SIGNATURE_JS, interact_index)

    def move_slider(self, slider, fraction: float) -> tuple[str, str]:
        """Drag the slider's handle to ``fraction`` of its track with the mouse; returns the readout before and after."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By

        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", slider)
        readout = slider.find_element(By.CSS_SELECTOR, ".widget-readout")
        before = readout.text
        track = slider.find_element(By.CSS_SELECTOR, ".noUi-target")
        handle = slider.find_element(By.CSS_SELECTOR, ".noUi-handle")
        target_x = track.rect["x"] + fraction * track.rect["width"]
        handle_x = handle.rect["x"] + handle.rect["width"] / 2
        ActionChains(self.driver).move_to_element(handle).click_and_hold() \
            .move_by_offset(int(target_x - handle_x), 0).release().perform()
        return before, readout.text

    def choose_another(self, dropdown) -> tuple[str, str]:
        """Pick the next option of a dropdown (the first after the last); returns the choice before and after."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.select import Select

        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", dropdown)
        select = Select(dropdown.find_element(By.CSS_SELECTOR, "select"))
        before = select.first_selected_option.text
        labels = [option.text for option in select.options]
        select.select_by_index((labels.index(before) + 1) % len(labels))
        return before, select.first_selected_option.text

    def wait_for_output(self, interact_index: int, timeout: float = 120.0, settle: float = 1.5) -> dict:
        """The interact's output once the kernel is idle and the output has not changed for ``settle`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        time.sleep(0.5)  # the slider's new value reaches the kernel, which starts the update
        while time.monotonic() < deadline:
            now = self.output_signature(interact_index)
            if now != last:
                last, since = now, time.monotonic()
            elif self.state()["kernel"] == "idle" and time.monotonic() - since >= settle:
                return now
            time.sleep(0.25)
        raise TimeoutError(f"{self.name}: widget {interact_index}'s output did not settle within {timeout:.0f} s")

    def screenshot(self, path: Path) -> None:
        """The first widget (or the top of the notebook) in view, saved as a PNG."""
        interacts = self.interacts()
        if interacts:
            self.driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", interacts[0])
            time.sleep(0.3)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
