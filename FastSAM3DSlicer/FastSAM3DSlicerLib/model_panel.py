"""The panel's model fields: model, device, precision, weights and adapter files, server, token.

A widget helper (it uses Qt): it fills the menus, keeps the choices in the application's
settings (per-scene choices live in the parameter node instead), shows the server's fields only
for a remote device, and gives the logic's ``loadModel`` its arguments.
"""

from __future__ import annotations

import os

import qt
import slicer
from slicer.i18n import tr as _

from fastsam3d_mrml.models import DEVICE_CHOICES, MODEL_CHOICES, PRECISION_CHOICES, REMOTE

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
        labels = translatedMenuLabels()
        for combo, choices in (
            (ui.modelComboBox, MODEL_CHOICES),
            (ui.deviceComboBox, DEVICE_CHOICES),
            (ui.precisionComboBox, PRECISION_CHOICES),
        ):
            for name, label in choices:
                combo.addItem(labels.get(label, label), name)
        self._restoreSettings()
        for combo in (ui.modelComboBox, ui.deviceComboBox, ui.precisionComboBox):
            combo.connect("currentIndexChanged(int)", self._saveSettings)
        ui.deviceComboBox.connect("currentIndexChanged(int)", self.showRemoteFields)
        ui.serverLineEdit.connect("editingFinished()", self._saveSettings)
        ui.overwriteCheckBox.connect("toggled(bool)", self._saveSettings)
        ui.weightsPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        ui.adapterPathLineEdit.connect("currentPathChanged(QString)", self._saveSettings)
        self.showRemoteFields()

    def modelName(self) -> str:
        return self.ui.modelComboBox.currentData

    def remote(self) -> bool:
        return self.ui.deviceComboBox.currentData == REMOTE

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

    def _restoreSettings(self) -> None:
        ui = self.ui
        settings = qt.QSettings()
        for combo, key, default in (
            (ui.modelComboBox, SETTINGS_MODEL, "fastsam3d"),
            (ui.deviceComboBox, SETTINGS_DEVICE, "auto"),
            (ui.precisionComboBox, SETTINGS_PRECISION, "auto"),
        ):
            index = combo.findData(settings.value(key, default))
            combo.currentIndex = max(index, 0)
        ui.overwriteCheckBox.checked = slicer.util.toBool(settings.value(SETTINGS_OVERWRITE, False))
        ui.weightsPathLineEdit.currentPath = settings.value(SETTINGS_WEIGHTS_FILE, "")
        ui.adapterPathLineEdit.currentPath = settings.value(SETTINGS_ADAPTER_FILE, "")
        ui.serverLineEdit.text = settings.value(SETTINGS_SERVER, "")
        ui.tokenLineEdit.text = os.environ.get(TOKEN_VARIABLE, "")

    def _saveSettings(self, *unused) -> None:
        ui = self.ui
        settings = qt.QSettings()
        settings.setValue(SETTINGS_MODEL, ui.modelComboBox.currentData)
        settings.setValue(SETTINGS_DEVICE, ui.deviceComboBox.currentData)
        settings.setValue(SETTINGS_PRECISION, ui.precisionComboBox.currentData)
        settings.setValue(SETTINGS_OVERWRITE, ui.overwriteCheckBox.checked)
        settings.setValue(SETTINGS_WEIGHTS_FILE, ui.weightsPathLineEdit.currentPath)
        settings.setValue(SETTINGS_ADAPTER_FILE, ui.adapterPathLineEdit.currentPath)
        settings.setValue(SETTINGS_SERVER, ui.serverLineEdit.text.strip())
