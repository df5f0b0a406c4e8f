package kube

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// CopyDuty is what the agent of a session on a target copy
// (feature.copy_target) does once that session is gone, so that a killed
// mirrord leaves nothing behind: it restores the workload the session
// scaled down (copy_target.scale_down) when no client has been connected
// for RestoreAfter, and when it exits it restores it (again, if needed)
// and deletes the copy. The CLI does the same at the end of a session;
// whichever comes first acts, the other finds nothing to do.
//
// The agent does this with its own ServiceAccount, bound by a Role that
// allows exactly that (get and patch on the one workload, delete on the
// one pod); GrantCopyDuty creates them, owned by the copy so that they go
// with it, and RevokeCopyDuty removes them.
type CopyDuty struct {
	Copy     types.NamespacedName // the copy pod
	Workload *Workload            // scaled down for the session; nil: none
	// ServiceAccount the agent runs as, in the agent's namespace.
	ServiceAccount string
	// ownSA: the ServiceAccount was made for this session (not
	// agent.service_account); with crossNS it is owned by the agent's
	// Job(s), since an owner must be in its dependent's namespace.
	ownSA, crossNS bool
	agentNS        string
	client         *Client
}

// RestoreAfter is how long the agent waits, once its last client is gone,
// before it restores a scaled-down workload. A session whose connection
// dropped for longer gets the workload back at 0 when it reconnects;
// after a kill -9 of mirrord the workload has its replicas back within a
// few seconds, not after agent.reconnect_timeout.
const RestoreAfter = 3 * time.Second

// AgentArgs are the agent's flags for its duty.
func (d *CopyDuty) AgentArgs() []string {
	args := []string{"--copy-pod", d.Copy.Namespace + "/" + d.Copy.Name}
	if d.Workload != nil {
		args = append(args, "--restore", d.Workload.Flag(), "--restore-after", RestoreAfter.String())
	}
	return args
}

// GrantCopyDuty creates the ServiceAccount (in agentNS; none when
// serviceAccount, agent.service_account, names one), Role and RoleBinding
// (in the copy's namespace) that let the agent do its CopyDuty.
func (c *Client) GrantCopyDuty(ctx context.Context, agentNS string, copy *corev1.Pod, w *Workload, serviceAccount *string) (*CopyDuty, error) {
	d := &CopyDuty{
		Copy:     types.NamespacedName{Namespace: copy.Namespace, Name: copy.Name},
		Workload: w, agentNS: agentNS, crossNS: agentNS != copy.Namespace, client: c,
		ServiceAccount: copy.Name,
	}
	owner := []metav1.OwnerReference{{APIVersion: "v1", Kind: "Pod", Name: copy.Name, UID: copy.UID}}
	labels := map[string]string{"app": "mirrord", CopyOfLabel: copy.Labels[CopyOfLabel]}
	meta := func(ns string, owned bool) metav1.ObjectMeta {
		m := metav1.ObjectMeta{Name: copy.Name, Namespace: ns, Labels: labels}
		if owned {
			m.OwnerReferences = owner
		}
		return m
	}
	why := "the agent must be able to delete the target's copy"
	if w != nil {
		why += fmt.Sprintf(" and restore %s's replicas", w)
	}
	why += " once the session is gone (also when mirrord is killed)"
	fail := func(what, ns string, err error) (*CopyDuty, error) {
		d.Revoke(context.Background())
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("feature.copy_target: %s: creating its %s in namespace %q needs create and delete on serviceaccounts, roles and rolebindings there, which this user lacks: %w", why, what, ns, err)
		}
		return nil, fmt.Errorf("feature.copy_target: %s: create its %s in namespace %q: %w", why, what, ns, err)
	}
	if serviceAccount != nil && *serviceAccount != "" {
		d.ServiceAccount = *serviceAccount
	} else {
		sa := &corev1.ServiceAccount{ObjectMeta: meta(agentNS, !d.crossNS)}
		if _, err := c.Clientset.CoreV1().ServiceAccounts(agentNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
			return fail("ServiceAccount", agentNS, err)
		}
		d.ownSA = true
	}
	rules := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, ResourceNames: []string{copy.Name}, Verbs: []string{"get", "delete"}}}
	if w != nil {
		gvr := w.gvr()
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{gvr.Group}, Resources: []string{gvr.Resource}, ResourceNames: []string{w.Name}, Verbs: []string{"get", "patch"}})
	}
	role := &rbacv1.Role{ObjectMeta: meta(copy.Namespace, true), Rules: rules}
	if _, err := c.Clientset.RbacV1().Roles(copy.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		return fail("Role", copy.Namespace, err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: meta(copy.Namespace, true),
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: d.ServiceAccount, Namespace: agentNS}},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: copy.Name},
	}
	if _, err := c.Clientset.RbacV1().RoleBindings(copy.Namespace).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		return fail("RoleBinding", copy.Namespace, err)
	}
	return d, nil
}

// ownAccount makes the duty's ServiceAccount, when it is in another
// namespace than the copy, owned by job too, so that the garbage
// collector removes it with the last of the session's agent Jobs.
func (d *CopyDuty) ownAccount(ctx context.Context, jobName string, jobUID types.UID) error {
	if !d.ownSA || !d.crossNS {
		return nil
	}
	sas := d.client.Clientset.CoreV1().ServiceAccounts(d.agentNS)
	sa, err := sas.Get(ctx, d.ServiceAccount, metav1.GetOptions{})
	if err != nil {
		return err
	}
	sa.OwnerReferences = append(sa.OwnerReferences, metav1.OwnerReference{APIVersion: "batch/v1", Kind: "Job", Name: jobName, UID: jobUID})
	_, err = sas.Update(ctx, sa, metav1.UpdateOptions{})
	return err
}

// Revoke removes what GrantCopyDuty created (the garbage collector would
// remove it with the copy, but later).
func (d *CopyDuty) Revoke(ctx context.Context) error {
	var errs []string
	del := func(kind string, err error) {
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Sprintf("%s %s: %v", kind, d.Copy.Name, err))
		}
	}
	opts := metav1.DeleteOptions{}
	del("RoleBinding", d.client.Clientset.RbacV1().RoleBindings(d.Copy.Namespace).Delete(ctx, d.Copy.Name, opts))
	del("Role", d.client.Clientset.RbacV1().Roles(d.Copy.Namespace).Delete(ctx, d.Copy.Name, opts))
	if d.ownSA {
		del("ServiceAccount", d.client.Clientset.CoreV1().ServiceAccounts(d.agentNS).Delete(ctx, d.ServiceAccount, opts))
	}
	if len(errs) > 0 {
		return fmt.Errorf("remove the agent's permissions: %s", strings.Join(errs, "; "))
	}
	return nil
}

// AgentDuty is the agent's side of a CopyDuty, with the agent's own
// (in-cluster) credentials.
type AgentDuty struct {
	copy     types.NamespacedName
	workload *Workload
	cs       kubernetes.Interface
	dyn      dynamic.Interface
	log      *slog.Logger
}

// NewAgentDuty reads the agent's --copy-pod (NAMESPACE/NAME) and
// --restore (Workload.Flag; may be empty) and connects to the API server
// as the pod's ServiceAccount.
func NewAgentDuty(copyPod, restore string, log *slog.Logger) (*AgentDuty, error) {
	ns, name, ok := strings.Cut(copyPod, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--copy-pod %q: want NAMESPACE/NAME", copyPod)
	}
	d := &AgentDuty{copy: types.NamespacedName{Namespace: ns, Name: name}, log: log}
	if restore != "" {
		w, err := ParseWorkload(restore)
		if err != nil {
			return nil, fmt.Errorf("--restore: %w", err)
		}
		d.workload = &w
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("the agent's duty for copy %s needs the API server: %w", copyPod, err)
	}
	cfg.Timeout = 10 * time.Second
	if d.cs, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if d.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// Restore restores the scaled-down workload, if the session left it
// scaled down.
func (d *AgentDuty) Restore(ctx context.Context) {
	if d.workload == nil {
		return
	}
	restored, err := RestoreScale(ctx, d.dyn, *d.workload, d.copy.Name)
	switch {
	case err != nil:
		d.log.Error("cannot restore the scaled-down workload", "workload", d.workload.Flag(), "err", err)
	case restored:
		d.log.Info("restored the workload the session had scaled down", "workload", d.workload.Flag())
	}
}

// Finish restores the workload and deletes the copy: the agent's last
// act.
func (d *AgentDuty) Finish(ctx context.Context) {
	d.Restore(ctx)
	err := d.cs.CoreV1().Pods(d.copy.Namespace).Delete(ctx, d.copy.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))})
	if err != nil && !apierrors.IsNotFound(err) {
		d.log.Error("cannot delete the target's copy", "pod", d.copy.String(), "err", err)
	}
}
