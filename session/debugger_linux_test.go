package session

import "testing"

// The command lines are the ones the IDEs' debuggers start programs with
// (upstream's layer-lib/src/debugger_ports.rs detects the same ports).
func TestDebuggerPorts(t *testing.T) {
	tests := []struct {
		name string
		env  []string
		argv []string
		want uint16 // 0: none
	}{
		{"debugpy connect", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"},
			[]string{"/usr/bin/python3", "/home/u/.vscode/extensions/ms-python.debugpy/bundled/libs/debugpy/launcher", "--connect", "127.0.0.1:46123", "--", "app.py"}, 46123},
		{"debugpy old launcher", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"},
			[]string{"python3", "/x/debugpy/launcher", "40111", "--", "app.py"}, 40111},
		{"debugpy listen", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"},
			[]string{"python3", "-m", "debugpy", "--listen", "0.0.0.0:5678", "app.py"}, 5678},
		{"pydevd", []string{"MIRRORD_DETECT_DEBUGGER_PORT=pydevd"},
			[]string{"python3", "/opt/pycharm/plugins/python/helpers/pydev/pydevd.py", "--client", "127.0.0.1", "--port", "38231", "--file", "app.py"}, 38231},
		{"jdwp", []string{"MIRRORD_DETECT_DEBUGGER_PORT=javaagent"},
			[]string{"java", "-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=127.0.0.1:5005", "-jar", "app.jar"}, 5005},
		{"jdwp any host", []string{"MIRRORD_DETECT_DEBUGGER_PORT=javaagent"},
			[]string{"java", "-agentlib:jdwp=transport=dt_socket,server=y,address=*:8000", "Main"}, 8000},
		{"node inspect-brk", []string{"MIRRORD_DETECT_DEBUGGER_PORT=nodeinspector"},
			[]string{"node", "--inspect-brk=9230", "index.js"}, 9230},
		{"node bare inspect", []string{"MIRRORD_DETECT_DEBUGGER_PORT=nodeinspector"},
			[]string{"node", "--inspect", "index.js"}, 9229},
		{"node NODE_OPTIONS", []string{"MIRRORD_DETECT_DEBUGGER_PORT=nodeinspector", "NODE_OPTIONS=--max-old-space-size=100 --inspect=127.0.0.1:9331"},
			[]string{"node", "index.js"}, 9331},
		{"resharper", []string{"MIRRORD_DETECT_DEBUGGER_PORT=resharper"},
			[]string{"/usr/bin/dotnet", "exec", "/opt/rider/Debugger.dll", "--frontend-port=41234"}, 41234},
		{"python app's own --port", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"},
			[]string{"python3", "worker.py", "--port", "8080"}, 0},
		{"debugpy, then the app's --port", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"},
			[]string{"python3", "/x/debugpy", "--connect", "127.0.0.1:41000", "app.py", "--port", "8080"}, 41000},
		{"no detection asked", nil, []string{"node", "--inspect=9229"}, 0},
		{"other debugger", []string{"MIRRORD_DETECT_DEBUGGER_PORT=debugpy"}, []string{"node", "--inspect=9229"}, 0},
		{"plain app", []string{"MIRRORD_DETECT_DEBUGGER_PORT=javaagent"}, []string{"java", "-jar", "app.jar", "--port", "80"}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDebuggerPorts(tt.env, tt.argv)
			var got uint16
			if len(d.ports) > 0 {
				got = d.ports[0]
			}
			if got != tt.want || (tt.want != 0 && !d.has(tt.want)) {
				t.Errorf("detected %v, want %d", d.ports, tt.want)
			}
		})
	}
}
