"""Installing the module's dependencies the first time an action needs them.

A widget helper (it uses Qt): it asks the user once, installs PyTorch through the PyTorch
extension, then the engine's other dependencies (and, from a source checkout, the engine itself)
on a background thread while the panel stays usable, and afterwards runs the action that asked.
What to install, and how, is :mod:`.install` (no Qt). Like it, this file imports nothing of the
engine: it runs before the engine is installed.
"""

from __future__ import annotations

from typing import Any, Callable

import qt
import slicer
from slicer.i18n import tr as _

from . import install

# While pip runs, the panel's timer ticks this often, and each tick waits this long for pip's
# output with the GIL released: the only time the installer's thread runs inside Slicer. The
# thread only reads output lines, so it needs less than the engine's worker (see
# fastsam3d_mrml.worker), and the panel stays fluid.
INSTALL_POLL_INTERVAL_MS = 50
INSTALL_POLL_WAIT_S = 0.015


class FirstUseInstaller:
    """The installation that the panel's Start and Test connection ask for.

    ``widget`` is the module's ``FastSAM3DSlicerWidget``: this shows the progress in its status
    line, turns its buttons off while installing, and has its timer collect pip's output.
    """

    def __init__(self, widget: Any) -> None:
        self._widget = widget
        self._installer: install.BackgroundSteps | None = None  # runs pip in the background
        self._installingTorch = False  # the PyTorch extension runs on the GUI thread meanwhile
        self._afterInstall: Callable[[], None] | None = None

    @property
    def installing(self) -> bool:
        """Something is being installed: no second installation may start."""
        return self._installer is not None or self._installingTorch

    @property
    def inBackground(self) -> bool:
        """pip runs on the background thread: the panel's timer must call :meth:`poll`."""
        return self._installer is not None

    def poll(self) -> None:
        """Let the background thread run and show pip's output (call from the panel's timer);
        once the installation ended, report it."""
        installer = self._installer
        if installer is None or not installer.poll(INSTALL_POLL_WAIT_S, self._widget.showStatus):
            return
        if installer.error is None:
            self._onInstalled()
        else:
            self._onInstallFailed(installer.error)

    def shutdown(self) -> None:
        """Forget a running installation (the module is closing): pip ends by itself, and its
        thread does not keep Slicer from quitting."""
        self._installer = None

    def dependenciesReady(self, remote: bool, then: Callable[[], None]) -> bool:
        """True if PyTorch (onnxruntime for a remote server) and the engine's dependencies are
        there; else asks once, installs PyTorch through the PyTorch extension, and the rest in
        the background, then calls ``then`` (the action that asked) if the module is still
        shown."""
        if self.installing:
            return False
        missing = install.missing_packages(remote=remote)
        if not missing:
            return True
        needsTorch = "torch" in missing
        if needsTorch and not self._torchCanBeInstalled():
            return False
        steps = install.plan_installation(
            install.slicer_python(), source=install.source_tree(), remote=remote
        )
        if not self._confirm(steps, needsTorch, remote):
            return False
        if needsTorch:
            self._installTorch()
        if not steps:
            return True
        self._afterInstall = then
        self._installer = install.BackgroundSteps(steps)
        self._widget.updateTimer()
        self._widget.updateButtons()
        return False

    def _torchCanBeInstalled(self) -> bool:
        """False if Slicer must restart first (offering to restart now)."""
        try:
            install.check_torch_can_be_installed()
        except install.RestartRequired as error:
            if slicer.util.confirmOkCancelDisplay(
                _("{reason}\n\nRestart Slicer now?").format(reason=error),
                windowTitle=_("FastSAM3D: restart needed"),
            ):
                slicer.util.restart()
            return False
        return True

    def _confirm(self, steps, needsTorch: bool, remote: bool) -> bool:
        listing = [step.description for step in steps]
        if needsTorch:
            listing.insert(
                0,
                _("PyTorch {requirement}, through the PyTorch extension").format(
                    requirement=install.TORCH_REQUIREMENT
                ),
            )
        size = _("about 30 MB") if remote else _("a few minutes, up to a few GB")
        return slicer.util.confirmOkCancelDisplay(
            _(
                "FastSAM3D needs these Python packages, which will be downloaded and installed "
                "into Slicer now ({size}):\n\n{packages}"
            ).format(size=size, packages="\n".join("• " + line for line in listing)),
            windowTitle=_("FastSAM3D: first use"),
        )

    def _installTorch(self) -> None:
        self._widget.showStatus(_("Installing PyTorch..."))
        # The extension's installer processes GUI events while it downloads: no second
        # install may start meanwhile.
        self._installingTorch = True
        self._widget.updateButtons()
        try:
            with slicer.util.WaitCursor():
                install.install_torch()
        finally:
            self._installingTorch = False
            self._widget.updateButtons()

    def _onInstalled(self) -> None:
        self._finishInstall()
        self._widget.showStatus(_("Installed."))
        self._widget.modelPanel.fillMenus()  # the engine imports now
        if not self._widget.isShown():  # the user left the module meanwhile: nothing to run
            return
        # Outside this timer slot, so that a failure is reported once, by its own guard.
        qt.QTimer.singleShot(
            0,
            self._widget.guarded(
                self._afterInstall, _("FastSAM3D failed after installing."), waitCursor=False
            ),
        )

    def _onInstallFailed(self, error: BaseException) -> None:
        self._finishInstall()
        self._widget.showStatus(_("Installation failed."))
        slicer.util.errorDisplay(str(error), windowTitle=_("FastSAM3D: installation failed"))

    def _finishInstall(self) -> None:
        self._installer = None
        self._widget.updateButtons()
