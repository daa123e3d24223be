// Command kubestand is the Kubernetes the tests run against: a real kube-apiserver, built
// from k8s.io/kubernetes at the release go.mod pins, over an etcd embedded in the same
// process, so a test starts, kills (SIGKILL) and restarts one process and the data survive
// in the etcd directory.
//
//	kubestand apiserver --etcd-dir DIR --etcd-port N --etcd-peer-port M -- KUBE-APISERVER FLAGS
//	kubestand compact --etcd-port N
//
// "compact" compacts etcd to its current revision, so a watch resumed from an older
// resourceVersion meets "410 Gone" as it would after etcd's periodic compaction.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: kubestand apiserver|compact FLAGS"))
	}
	switch os.Args[1] {
	case "apiserver":
		os.Exit(apiserver(os.Args[2:]))
	case "compact":
		if err := compact(os.Args[2:]); err != nil {
			fail(err)
		}
	default:
		fail(fmt.Errorf("unknown command %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kubestand:", err)
	os.Exit(2)
}

func localURL(port int) url.URL {
	return url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", port)}
}

// apiserver starts etcd, then runs kube-apiserver with the flags after "--" and
// --etcd-servers pointing at that etcd, until kube-apiserver exits.
func apiserver(args []string) int {
	flags := flag.NewFlagSet("apiserver", flag.ExitOnError)
	dir := flags.String("etcd-dir", "", "etcd's data directory")
	port := flags.Int("etcd-port", 0, "etcd's client port on 127.0.0.1")
	peerPort := flags.Int("etcd-peer-port", 0, "etcd's peer port on 127.0.0.1")
	if err := flags.Parse(args); err != nil {
		fail(err)
	}
	if *dir == "" || *port == 0 || *peerPort == 0 {
		fail(errors.New("apiserver needs --etcd-dir, --etcd-port and --etcd-peer-port"))
	}

	cfg := embed.NewConfig()
	cfg.Name = "kubestand"
	cfg.Dir = *dir
	cfg.LogLevel = "error"
	client, peer := localURL(*port), localURL(*peerPort)
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{client}, []url.URL{client}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{peer}, []url.URL{peer}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	etcd, err := embed.StartEtcd(cfg)
	if err != nil {
		fail(fmt.Errorf("etcd: %w", err))
	}
	defer etcd.Close()
	select {
	case <-etcd.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		fail(errors.New("etcd did not become ready in 60 s"))
	}

	command := app.NewAPIServerCommand()
	command.SetArgs(append(flags.Args(), "--etcd-servers="+client.String()))
	return cli.Run(command)
}

// compact compacts etcd at 127.0.0.1:PORT to its current revision.
func compact(args []string) error {
	flags := flag.NewFlagSet("compact", flag.ExitOnError)
	port := flags.Int("etcd-port", 0, "etcd's client port on 127.0.0.1")
	if err := flags.Parse(args); err != nil {
		return err
	}
	endpoint := localURL(*port)
	client, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint.String()},
		DialTimeout: 10 * time.Second,
	})
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	current, err := client.Get(ctx, "compact-probe")
	if err != nil {
		return fmt.Errorf("etcd revision: %w", err)
	}
	revision := current.Header.Revision
	if _, err := client.Compact(ctx, revision, clientv3.WithCompactPhysical()); err != nil {
		return fmt.Errorf("compact to %d: %w", revision, err)
	}
	fmt.Println(revision)
	return nil
}
