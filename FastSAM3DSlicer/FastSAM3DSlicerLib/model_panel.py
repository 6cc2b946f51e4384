"""The panel's model fields: model, device, precision, weights and adapter files, server, token.

A widget helper (it uses Qt): it fills the menus, keeps the choices in the application's
settings (per-scene choices live in the parameter node instead), shows the server's fields only
for a remote device, and gives the logic's ``loadModel`` its arguments.

The model, device and precision menus list the engine's choices (``fastsam3d_mrml.models``), so
they are filled once the engine imports: when the panel is set up if the extension carries the
engine or it is installed, else after the first-use installation (a source checkout).
"""

from __future__ import annotations

import os

import qt
import slicer
from slicer.i18n import tr as _

from . import install

# Application preferences (QSettings).
SETTINGS_MODEL = "FastSAM3D/Model"
SETTINGS_DEVICE = "FastSAM3D/Device"
SETTINGS_PRECISION = "FastSAM3D/Precision"
SETTINGS_WEIGHTS_FILE = "FastSAM3D/WeightsFile"
SETTINGS_ADAPTER_FILE = "FastSAM3D/AdapterFile"
SETTINGS_SERVER = "FastSAM3D/Server"
SETTINGS_OVERWRITE = "FastSAM3D/AllowOverwrite"
# The token is not saved with the settings (a plain file); this variable can hold it.
TOKEN_VARIABLE = "FASTSAM3D_TOKEN"


def translatedMenuLabels() -> dict[str, str]:
    """The engine's menu labels that are words, translated; the others are names (of models,
    devices, number types), shown as the engine lists them."""
    return {
        "Auto": _("Auto"),
        "Remote server": _("Remote server"),
        "float16 (GPU)": _("float16 (GPU)"),
        "int8 (CPU)": _("int8 (CPU)"),
    }


class ModelPanel:
    """The model fields of the panel's ``ui`` (from ``FastSAM3DSlicer.ui``)."""

    def __init__(self, ui) -> None:
        self.ui = ui
        # The engine's name of the remote device; None until the menus are filled.
        self._remoteDevice: str | None = None
        self._restoreFields()
        ui.serverLineEdit.connect("editingFinished()", self._saveSettings)
        ui.overwriteCheckBox.connect("toggled(bool)", self._saveSettings)
        ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        ui.adapterPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        if install.engine_importable():
            self.fillMenus()
        self.showRemoteFields()

    def fillMenus(self) -> None:
        """Fill the model, device and precision menus with the engine's choices and the saved
        ones (once; call it when the engine imports)."""
        if self._remoteDevice is not None:
            return
        from fastsam3d_mrml.models import DEVICE_CHOICES, MODEL_CHOICES, PRECISION_CHOICES, REMOTE

        ui, labels = self.ui, translatedMenuLabels()
        settings = qt.QSettings()
        for combo, choices, key, default in (
            (ui.modelComboBox, MODEL_CHOICES, SETTINGS_MODEL, "fastsam3d"),
            (ui.deviceComboBox, DEVICE_CHOICES, SETTINGS_DEVICE, "auto"),
            (ui.precisionComboBox, PRECISION_CHOICES, SETTINGS_PRECISION, "auto"),
        ):
            for name, label in choices:
                combo.addItem(labels.get(label, label), name)
            combo.currentIndex = max(combo.findData(settings.value(key, default)), 0)
            # Connected after filling: filling is no choice of the user's to save.
            combo.connect("currentIndexChanged(int)", self._saveSettings)
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.showRemoteFields)
        self._remoteDevice = REMOTE
        self.showRemoteFields()

    def modelName(self) -> str:
        return self.ui.modelComboBox.currentData

    def remote(self) -> bool:
        """The remote server is chosen (never before the menus are filled: until the engine is
        installed, the first use installs for a local device)."""
        if self._remoteDevice is None:
            return False
        return self.ui.deviceComboBox.currentData == self._remoteDevice

    def server(self) -> tuple:
        """(address, token) of the remote server, or (None, None) for a local device."""
        if not self.remote():
            return None, None
        return self.ui.serverLineEdit.text.strip(), self.ui.tokenLineEdit.text.strip() or None

    def loadModelArguments(self) -> tuple:
        """``FastSAM3DSlicerLogic.loadModel``'s arguments, in its order: model, device, weights
        file, server, token, adapter file, precision."""
        ui = self.ui
        return (
            self.modelName(),
            ui.deviceComboBox.currentData,
            ui.weightsPathLineEdit.currentPath or None,
            *self.server(),
            ui.adapterPathLineEdit.currentPath or None,
            # The server chooses its own precision.
            "auto" if self.remote() else ui.precisionComboBox.currentData,
        )

    def showRemoteFields(self, *unused) -> None:
        remote = self.remote()
        self.ui.remoteServerWidget.visible = remote
        # The server chooses its own precision.
        self.ui.precisionLabel.visible = self.ui.precisionComboBox.visible = not remote

    def _restoreFields(self) -> None:
        """The saved choices of the fields that are not menus (see :meth:`fillMenus`)."""
        ui = self.ui
        settings = qt.QSettings()
        ui.overwriteCheckBox.checked = slicer.util.toBool(settings.value(SETTINGS_OVERWRITE, False))
        ui.weightsPathLineEdit.currentPath = settings.value(SETTINGS_WEIGHTS_FILE, "")
        ui.adapterPathLineEdit.currentPath = settings.value(SETTINGS_ADAPTER_FILE, "")
        ui.serverLineEdit.text = settings.value(SETTINGS_SERVER, "")
        ui.tokenLineEdit.text = os.environ.get(TOKEN_VARIABLE, "")

    def _saveSettings(self, *unused) -> None:
        ui = self.ui
        settings = qt.QSettings()
        if self._remoteDevice is not None:  # empty menus hold no choice to save
            settings.setValue(SETTINGS_MODEL, ui.modelComboBox.currentData)
            settings.setValue(SETTINGS_DEVICE, ui.deviceComboBox.currentData)
            settings.setValue(SETTINGS_PRECISION, ui.precisionComboBox.currentData)
        settings.setValue(SETTINGS_OVERWRITE, ui.overwriteCheckBox.checked)
        settings.setValue(SETTINGS_WEIGHTS_FILE, ui.weightsPathLineEdit.currentPath)
        settings.setValue(SETTINGS_ADAPTER_FILE, ui.adapterPathLineEdit.currentPath)
        settings.setValue(SETTINGS_SERVER, ui.serverLineEdit.text.strip())
