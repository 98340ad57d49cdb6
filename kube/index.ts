// What the build side (packer/) and the site side (installer/) both know about laying a cluster down
// with kubeadm: its image rules, the image settings acinstall derives from a bundle, and the site's
// defaults. Imports only oci/, so that neither side has to import the other.
export { KUBEADM_RULES, kubeadmImages, kubeadmRules, type ImageConfig, type KubeadmRules } from './kubeadm-images.js';
export { KUBEADM_API, imageListConfig, imageSettings, kubeadmImageConfig, kubernetesVersion, missingImages, type ImageSource } from './bundle-images.js';
export { CNI_CHARTS, DEFAULT_CNI, isLvscareImage, type Cni } from './site-defaults.js';
