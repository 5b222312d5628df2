; Inno Setup script for Tweety Studio on Windows (64-bit). Build on a Windows machine:
;   1. make package equivalent: python -m pip install pyinstaller; pyinstaller packaging\tweety-studio.spec
;      (with llama-cpp-python, torch (CPU) and the project installed, as in the README's Windows section)
;   2. "C:\Program Files (x86)\Inno Setup 6\ISCC.exe" /DVersion=0.1.0 packaging\windows\tweety-studio.iss
; .github/workflows/windows.yml runs these steps on GitHub's windows-latest (never run yet: untested).
; Output: dist\tweety-studio-<version>-setup.exe, a per-user or all-users installer with a Start-menu entry.
#ifndef Version
  #define Version "0.1.0"
#endif

[Setup]
AppId={{7B0F5D2E-7E57-4C1B-9C55-2F6A0D7E1A11}
AppName=Tweety Studio
AppVersion={#Version}
AppPublisher=Tweety Studio
DefaultDirName={autopf}\Tweety Studio
DefaultGroupName=Tweety Studio
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=tweety-studio-{#Version}-setup
SetupIconFile=..\..\resources\icons\tweety-studio.ico
UninstallDisplayIcon={app}\tweety-studio.exe
Compression=lzma2/fast
SolidCompression=no
WizardStyle=modern

[Files]
Source: "..\..\dist\tweety-studio\*"; DestDir: "{app}"; Flags: recursesubdirs createallsubdirs ignoreversion

[Icons]
Name: "{group}\Tweety Studio"; Filename: "{app}\tweety-studio.exe"
Name: "{autodesktop}\Tweety Studio"; Filename: "{app}\tweety-studio.exe"; Tasks: desktopicon

[Tasks]
Name: "desktopicon"; Description: "Create a desktop shortcut"; Flags: unchecked

[Run]
; The same headless end-to-end check as the Linux bundles, offered after installation.
Filename: "{app}\tweety-studio.exe"; Parameters: "--self-test"; Description: "Run the self-test"; \
  Flags: postinstall skipifsilent unchecked
Filename: "{app}\tweety-studio.exe"; Description: "Start Tweety Studio"; Flags: postinstall nowait skipifsilent
