"""Installing the module's dependencies the first time an action needs them.

A widget helper (it uses Qt): it asks the user once, installs PyTorch through the PyTorch
extension, then the engine's other dependencies on a background thread while the panel stays
usable, and afterwards runs the action that asked. What to install, and how, is
:mod:`.install` (no Qt).
"""

from __future__ import annotations

from typing import Any, Callable

import qt
import slicer
from slicer.i18n import tr as _

from fastsam3d_mrml.worker import POLL_INTERVAL_S, Worker

from . import install


class FirstUseInstaller:
    """The installation that the panel's Start and Test connection ask for.

    ``widget`` is the module's ``FastSAM3DSlicerWidget``: this shows the progress in its status
    line, turns its buttons off while installing, and has its timer collect pip's output.
    """

    def __init__(self, widget: Any) -> None:
        self._widget = widget
        self._installer: Worker | None = None  # runs pip in the background
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
        """Let the background thread report pip's output (call from the panel's timer)."""
        if self._installer is not None:
            self._installer.poll(POLL_INTERVAL_S)

    def shutdown(self) -> None:
        if self._installer is not None:
            self._installer.shutdown()

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
        self._installer = Worker(
            on_progress=lambda line, fraction: self._widget.showStatus(line),
            on_error=self._onInstallFailed,
        )
        self._installer.submit(
            lambda report: install.run_steps(steps, lambda line: report(line, None)),
            on_done=self._onInstalled,
            label="install",
        )
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

    def _onInstalled(self, _value) -> None:
        self._finishInstall()
        self._widget.showStatus(_("Installed."))
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
        installer, self._installer = self._installer, None
        if installer is not None:
            installer.shutdown()
        self._widget.updateButtons()
