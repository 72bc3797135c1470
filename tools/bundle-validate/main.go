// Command bundle-validate runs operator-framework's bundle validators on bundle directories,
// as `operator-sdk bundle validate --select-optional suite=operatorframework` runs them: the
// default suite (CSV, CRDs, bundle), then OperatorHub's, the standard capabilities and
// categories, the deprecated APIs (for the Kubernetes version the project pins) and the good
// practices.
//
// It prints one line per result (`<bundle>: <level>: <type>: <detail>`) and exits 1 on any
// error or warning, 2 when a bundle cannot be read.
package main

import (
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
	interfaces "github.com/operator-framework/api/pkg/validation/interfaces"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate <bundle dir>...")
		os.Exit(2)
	}
	validators := interfaces.Validators{}
	validators = append(validators, validation.DefaultBundleValidators...)
	validators = append(validators,
		validation.OperatorHubV2Validator,
		validation.StandardCapabilitiesValidator,
		validation.StandardCategoriesValidator,
		validation.AlphaDeprecatedAPIsValidator,
		validation.GoodPracticesValidator,
	)
	failed := false
	for _, dir := range os.Args[1:] {
		bundle, err := manifests.GetBundleFromDir(dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", dir, err)
			os.Exit(2)
		}
		objects := bundle.ObjectsToValidate()
		// The Kubernetes version to check deprecated APIs against: the one the project builds.
		objects = append(objects, map[string]string{"k8s-version": "1.36"})
		count := 0
		for _, result := range validators.Validate(objects...) {
			for _, e := range result.Errors {
				fmt.Printf("%s: error: %s\n", dir, describe(e))
				count++
			}
			for _, w := range result.Warnings {
				fmt.Printf("%s: warning: %s\n", dir, describe(w))
				count++
			}
		}
		if count > 0 {
			failed = true
		} else {
			fmt.Printf("%s: valid (%d validators, no error, no warning)\n", dir, len(validators))
		}
	}
	if failed {
		os.Exit(1)
	}
}

func describe(e errors.Error) string {
	return fmt.Sprintf("%s: %s", e.Type, e.Error())
}
