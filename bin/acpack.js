#!/usr/bin/env node
import '../dist/packer/main.js';
