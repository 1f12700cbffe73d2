package migrations

import (
	"strings"
	"testing"
)

// A server older than 14 is refused before anything is changed, naming its
// version and the one needed; 14 and later pass. (Up runs the check on the
// server it reaches; the suite's servers are 15, or 17 in Docker mode.)
func TestServerVersionCheck(t *testing.T) {
	for _, c := range []struct {
		num     int
		version string
		refused bool
	}{
		{130022, "13.22 (Debian 13.22-0+deb11u1)", true},
		{90624, "9.6.24", true},
		{140000, "14.0", false},
		{150018, "15.18", false},
		{170007, "17.7", false},
	} {
		err := checkServerVersion(c.num, c.version)
		if (err != nil) != c.refused {
			t.Errorf("%s: err %v, refused %v", c.version, err, c.refused)
			continue
		}
		if err != nil && (!strings.Contains(err.Error(), c.version) || !strings.Contains(err.Error(), "needs 14 or later")) {
			t.Errorf("%s: %q does not name the version and the one needed", c.version, err)
		}
	}
}
