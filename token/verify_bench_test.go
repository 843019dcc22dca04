package token

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkVerify measures what a login pays to check a token, for tokens
// with no caveats and with several: Verify alone, and Parse then Verify
// (what a login does with the text it is given).
func BenchmarkVerify(b *testing.B) {
	for _, caveats := range []int{0, 3, 8} {
		tok := mustMint(b, Client, Restriction{})
		for i := 0; i < caveats; i++ {
			var err error
			tok, err = tok.Attenuate(Restriction{NotAfter: testEpoch.Add(time.Duration(caveats-i) * time.Hour)})
			if err != nil {
				b.Fatal(err)
			}
		}
		text := tok.String()
		b.Run(fmt.Sprintf("caveats=%d", caveats), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tok.Verify(testKey, testEpoch); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("parse/caveats=%d", caveats), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tok, err := Parse(text)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tok.Verify(testKey, testEpoch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
